//! The OCI 1.1 referrers API, faked in front of a registry that lacks it
//! (see [`FaultProxy::referrers_api_fake`](crate::FaultProxy::referrers_api_fake)):
//! manifests with a `subject` PUT through the proxy are remembered and
//! listed by subject, as the distribution spec says a registry with the
//! API does.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::fault_proxy::{ProxyBody, State, forward_parts, full};

/// What the fake remembers: each subject's referrers, by repository.
#[derive(Default)]
pub(crate) struct Referrers {
    /// `(repository, subject digest)` → index entries.
    by_subject: Mutex<BTreeMap<(String, String), Vec<serde_json::Value>>>,
    served: AtomicUsize,
}

impl Referrers {
    /// How many referrers lists were served.
    pub(crate) fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Answers `req` when it is the fake's business (a referrers GET, a
    /// manifest PUT); hands it back otherwise.
    pub(crate) async fn intercept(
        &self,
        req: Request<Incoming>,
        state: &State,
    ) -> Result<Response<ProxyBody>, Request<Incoming>> {
        let path = req.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Err(req);
        };
        if req.method() == Method::GET
            && let Some((repository, subject)) = rest.rsplit_once("/referrers/")
        {
            return Ok(self.list(repository, subject));
        }
        if req.method() != Method::PUT || !rest.contains("/manifests/") {
            return Err(req);
        }
        let repository = rest
            .rsplit_once("/manifests/")
            .map_or("", |(r, _)| r)
            .to_owned();
        let (parts, body) = req.into_parts();
        let Ok(collected) = body.collect().await else {
            return Ok(full(StatusCode::BAD_REQUEST, "request body cut off\n"));
        };
        let bytes = collected.to_bytes();
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let body = Full::new(bytes.clone())
            .map_err(|never: Infallible| match never {})
            .boxed();
        let mut response = forward_parts(parts, body, state).await;
        let subject = manifest["subject"]["digest"].as_str().map(str::to_owned);
        if let (Some(subject), true) = (subject, response.status() == StatusCode::CREATED) {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            let artifact_type = manifest
                .get("artifactType")
                .or_else(|| manifest["config"].get("mediaType"))
                .cloned()
                .unwrap_or_default();
            let mut entry = serde_json::json!({
                "mediaType": manifest["mediaType"],
                "digest": digest,
                "size": bytes.len(),
                "artifactType": artifact_type,
            });
            if let Some(annotations) = manifest.get("annotations") {
                entry["annotations"] = annotations.clone();
            }
            let mut known = self.by_subject.lock().unwrap_or_else(|e| e.into_inner());
            let listed = known.entry((repository, subject.clone())).or_default();
            if !listed.iter().any(|e| e["digest"] == digest) {
                listed.push(entry);
            }
            if let Ok(value) = HeaderValue::from_str(&subject) {
                response.headers_mut().insert("OCI-Subject", value);
            }
        }
        Ok(response)
    }

    /// The referrers index of `subject` in `repository`.
    fn list(&self, repository: &str, subject: &str) -> Response<ProxyBody> {
        self.served.fetch_add(1, Ordering::SeqCst);
        let known = self.by_subject.lock().unwrap_or_else(|e| e.into_inner());
        let entries = known
            .get(&(repository.to_owned(), subject.to_owned()))
            .cloned()
            .unwrap_or_default();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        let mut response = full(
            StatusCode::OK,
            serde_json::to_vec(&index).unwrap_or_default(),
        );
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        response
    }
}
