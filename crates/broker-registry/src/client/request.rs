//! The one way the pull and push paths talk to the registry API: a [`Call`]
//! names what a request is for, where it goes and which access it needs;
//! [`RegistryClient::call`] builds the URL, sends it with the auth
//! handshake and retries, and turns any status the caller did not expect
//! into an error carrying the registry's own code and message.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};

use super::retry::Idempotent;
use super::{RegistryClient, Scope};
use crate::error::RegistryError;
use crate::progress::Reporter;
use broker_pins::Digest;

/// The header registries use to report a content digest.
const DOCKER_CONTENT_DIGEST: &str = "Docker-Content-Digest";

/// One request to the registry API: what it is for (in retry messages
/// and errors, e.g. "check of blob … in …"), where it goes (a path below
/// `/v2/`, or an absolute upload URL) and the access it needs.
pub(crate) struct Call<'a> {
    what: &'a str,
    path: &'a str,
    scopes: Vec<Scope>,
}

impl<'a> Call<'a> {
    /// A request that reads `repository`.
    pub(crate) fn pull(repository: &str, what: &'a str, path: &'a str) -> Self {
        let scopes = vec![Scope::Pull(repository.to_owned())];
        Self { what, path, scopes }
    }

    /// A request that writes `repository`.
    pub(crate) fn push(repository: &str, what: &'a str, path: &'a str) -> Self {
        let scopes = vec![Scope::PullPush(repository.to_owned())];
        Self { what, path, scopes }
    }

    /// Also needs to read `repository` (a cross-repository mount).
    pub(crate) fn reading(mut self, repository: &str) -> Self {
        self.scopes.push(Scope::Pull(repository.to_owned()));
        self
    }
}

/// The statuses of a HEAD that asks whether something exists.
pub(crate) const FOUND_OR_NOT: &[StatusCode] = &[StatusCode::OK, StatusCode::NOT_FOUND];

impl RegistryClient {
    /// Sends `call` (retried when transient: every API call is idempotent)
    /// with the request `make` builds for the URL; returns the response when
    /// its status is one of `expect`, else the error for it.
    pub(crate) async fn call(
        &self,
        call: Call<'_>,
        expect: &[StatusCode],
        reporter: &dyn Reporter,
        make: &(dyn Fn(&reqwest::Client, &str) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        let url = if call.path.contains("://") {
            call.path.to_owned()
        } else {
            self.url(call.path).await?
        };
        let response = self
            .send(
                call.what,
                &call.scopes,
                Idempotent::Yes,
                reporter,
                &|http| make(http, &url),
            )
            .await?;
        self.expect(call.what, expect, response).await
    }

    /// `response` when its status is one of `expect`, else the error for it.
    pub(crate) async fn expect(
        &self,
        what: &str,
        expect: &[StatusCode],
        response: Response,
    ) -> Result<Response, RegistryError> {
        if expect.contains(&response.status()) {
            Ok(response)
        } else {
            Err(self.unexpected(what, response).await)
        }
    }

    /// Turns an unexpected response into an error carrying the registry's
    /// own error code and message (never request headers).
    async fn unexpected(&self, what: &str, response: Response) -> RegistryError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let detail = registry_error_detail(&body);
        if status == 404 {
            return RegistryError::NotFound {
                registry: self.registry.clone(),
                what: format!("{what}{detail}"),
            };
        }
        RegistryError::Status {
            registry: self.registry.clone(),
            what: what.to_owned(),
            status,
            detail,
        }
    }

    /// Fails unless the digest the registry reports for stored content (if
    /// it reports one) is `expected`.
    pub(crate) fn check_reported_digest(
        &self,
        what: impl FnOnce() -> String,
        expected: &Digest,
        headers: &HeaderMap,
    ) -> Result<(), RegistryError> {
        match headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
        {
            Some(reported) if reported != expected.to_string() => {
                Err(RegistryError::DigestMismatch {
                    registry: self.registry.clone(),
                    what: what(),
                    expected: expected.to_string(),
                    actual: reported.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The digest the registry reports for the content of a response.
pub(crate) fn reported_digest(headers: &HeaderMap) -> Option<Digest> {
    headers
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The registry's `{"errors":[{"code","message"}]}` as ": CODE message".
fn registry_error_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(parsed) if !parsed.errors.is_empty() => {
            let parts: Vec<String> = parsed
                .errors
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.code.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("")
                    )
                    .trim()
                    .to_owned()
                })
                .collect();
            format!(": {}", parts.join("; "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_are_summarised() {
        let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:abc"}]}"#;
        assert_eq!(
            registry_error_detail(body),
            ": BLOB_UNKNOWN blob unknown to registry"
        );
        assert_eq!(registry_error_detail("not json"), "");
    }
}
