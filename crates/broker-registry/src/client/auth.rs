//! The auth handshake: anonymous first; on a 401, the registry's challenge
//! says whether it wants HTTP basic auth on every request or bearer tokens
//! per scope from a token service. Tokens are cached per scope set.
//!
//! Secrets never enter an error message: refusals name the user and where
//! the credentials came from, never the password or token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};

use super::transport::tls_problem;
use super::{RegistryClient, Scope, error_chain};
use crate::credentials::Credentials;
use crate::error::RegistryError;

#[derive(Debug, Default)]
enum AuthScheme {
    /// No challenge seen yet: try anonymously.
    #[default]
    Unknown,
    /// The registry wants HTTP basic auth on every request.
    Basic,
    /// The registry issues bearer tokens from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// What a client learnt about a registry's authentication.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    scheme: AuthScheme,
    /// Bearer tokens by the scopes they were issued for.
    tokens: HashMap<Vec<Scope>, Token>,
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
struct Token {
    value: String,
    /// Replaced by a fresh token from here on: a little before it expires,
    /// so no request (least of all an upload, whose body cannot be sent
    /// twice) goes out with a token the registry will refuse.
    renew_at: Instant,
}

/// The token lifetime the token specification tells clients to assume when
/// the service names none.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

impl Token {
    fn new(value: String, expires_in: Option<Duration>) -> Self {
        let lifetime = expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // The margin must cover a whole request in flight (a blob upload
        // on a slow link or a loaded machine), not just clock skew: half a
        // short token's life, at most 30 s of a long one. A token request
        // more is cheap; an upload refused mid-body is not.
        let margin = (lifetime / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
        Self {
            value,
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        }
    }

    fn fresh(&self) -> bool {
        Instant::now() < self.renew_at
    }
}

/// What to authenticate one request with; the send loop puts it on the
/// request with reqwest's `basic_auth`/`bearer_auth`, which also mark the
/// header sensitive.
pub(crate) enum Authorization {
    /// HTTP basic auth.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// A bearer token for the request's scopes.
    Bearer(String),
}

impl RegistryClient {
    /// The error for credentials the registry refused (or wanted and we had
    /// none), saying what to do.
    pub(crate) fn refused(&self, scopes: &[Scope]) -> RegistryError {
        let why = match &self.credentials.credentials {
            None => format!(
                "the registry requires credentials for {}: run `docker login {}` or pass --username and --password-stdin",
                scope_list(scopes),
                self.registry
            ),
            Some(Credentials::Basic { username, .. }) => format!(
                "the registry refused user `{username}` for {} (credentials from {}): check the password and the user's permissions",
                scope_list(scopes),
                self.credentials.origin
            ),
            Some(Credentials::IdentityToken(_)) => format!(
                "the registry refused the identity token from {} for {}: run `docker login {}` again",
                self.credentials.origin,
                scope_list(scopes),
                self.registry
            ),
        };
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            why,
        }
    }

    /// What to authenticate a request for `scopes` with, fetching a bearer
    /// token when the registry is known to use them.
    pub(crate) async fn authorization(
        &self,
        scopes: &[Scope],
    ) -> Result<Option<Authorization>, RegistryError> {
        let bearer = {
            let state = self.lock_auth();
            match &state.scheme {
                AuthScheme::Unknown => return Ok(None),
                AuthScheme::Basic => return Ok(self.basic()),
                AuthScheme::Bearer { realm, service } => match state.tokens.get(scopes) {
                    Some(token) if token.fresh() => {
                        return Ok(Some(Authorization::Bearer(token.value.clone())));
                    }
                    _ => (realm.clone(), service.clone()),
                },
            }
        };
        let token = self
            .fetch_token(&bearer.0, bearer.1.as_deref(), scopes)
            .await?;
        let value = token.value.clone();
        self.lock_auth().tokens.insert(scopes.to_vec(), token);
        Ok(Some(Authorization::Bearer(value)))
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, AuthState> {
        // A panic while holding this lock cannot leave the map half-updated
        // in a way that matters: at worst a token is fetched again.
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn basic(&self) -> Option<Authorization> {
        match &self.credentials.credentials {
            Some(Credentials::Basic { username, password }) => Some(Authorization::Basic {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        }
    }

    /// Learns the scheme from a 401's `WWW-Authenticate` header (and, for
    /// bearer auth, fetches the first token).
    pub(crate) async fn handle_challenge(
        &self,
        headers: &HeaderMap,
        scopes: &[Scope],
    ) -> Result<(), RegistryError> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                if self.basic().is_none() {
                    return Err(self.refused(scopes));
                }
                self.lock_auth().scheme = AuthScheme::Basic;
                Ok(())
            }
            "bearer" => {
                let realm =
                    params
                        .get("realm")
                        .cloned()
                        .ok_or_else(|| RegistryError::Unauthorized {
                            registry: self.registry.clone(),
                            why: "the bearer challenge names no realm to get a token from"
                                .to_owned(),
                        })?;
                let service = params.get("service").cloned();
                let token = self.fetch_token(&realm, service.as_deref(), scopes).await?;
                let mut state = self.lock_auth();
                state.scheme = AuthScheme::Bearer { realm, service };
                state.tokens.insert(scopes.to_vec(), token);
                Ok(())
            }
            _ => Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                why: format!("unsupported authentication challenge `{scheme}`"),
            }),
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[Scope],
    ) -> Result<Token, RegistryError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service.to_owned()));
        }
        for scope in scopes {
            query.push(("scope", scope.as_param()));
        }
        let request = match &self.credentials.credentials {
            Some(Credentials::IdentityToken(token)) => {
                let mut form = query.clone();
                form.push(("grant_type", "refresh_token".to_owned()));
                form.push(("refresh_token", token.clone()));
                form.push(("client_id", "broker-images".to_owned()));
                self.http().await?.post(realm).form(&form)
            }
            Some(Credentials::Basic { username, password }) => self
                .http()
                .await?
                .get(realm)
                .query(&query)
                .basic_auth(username, Some(password)),
            None => self.http().await?.get(realm).query(&query),
        };
        let response = request.send().await.map_err(|e| match tls_problem(&e) {
            Some(why) => RegistryError::Tls {
                registry: self.registry.clone(),
                why,
            },
            None => RegistryError::Unreachable {
                registry: self.registry.clone(),
                what: "token request".to_owned(),
                attempts: 1,
                why: error_chain(&e),
            },
        })?;
        if response.status() == StatusCode::UNAUTHORIZED
            || response.status() == StatusCode::FORBIDDEN
        {
            return Err(self.refused(scopes));
        }
        if !response.status().is_success() {
            return Err(RegistryError::Status {
                registry: self.registry.clone(),
                what: "token request".to_owned(),
                status: response.status().as_u16(),
                detail: String::new(),
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body: TokenResponse =
            response
                .json()
                .await
                .map_err(|e| RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    why: format!("the token service answered something that is not a token: {e}"),
                })?;
        let expires_in = body.expires_in.map(Duration::from_secs);
        body.token
            .or(body.access_token)
            .map(|value| Token::new(value, expires_in))
            .ok_or_else(|| RegistryError::Unauthorized {
                registry: self.registry.clone(),
                why: "the token service answered without a token".to_owned(),
            })
    }
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(Scope::as_param)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses `Bearer realm="…",service="…",scope="…"` into the scheme and its
/// parameters. Quoted values may contain commas.
fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        params.insert(key, value);
    }
    (scheme.to_owned(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_commas_in_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull,push");
        let (scheme, params) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "Registry Realm");
    }
}
