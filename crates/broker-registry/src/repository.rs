//! One repository of a registry and the distribution API calls made on it:
//! manifests and blobs checked, fetched and stored, cross-repository
//! mounts, upload sessions. Each call is described once here on top of the
//! client's request helper; the pull and push paths only decide what to
//! call when.

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::client::{Call, FOUND_OR_NOT, RegistryClient, reported_digest};
use crate::error::RegistryError;
use crate::manifest::ACCEPT_MANIFESTS;
use crate::progress::Reporter;
use broker_pins::Digest;

/// A request builder for a URL.
type Make<'m> = &'m (dyn Fn(&reqwest::Client, &str) -> RequestBuilder + Sync);

/// A repository (`broker/python-base`) of the registry `client` serves.
#[derive(Clone, Copy)]
pub(crate) struct Repository<'a> {
    client: &'a RegistryClient,
    name: &'a str,
    reporter: &'a dyn Reporter,
}

/// What a cross-repository mount came to.
pub(crate) enum MountResult {
    /// The registry linked the blob: nothing to upload.
    Mounted,
    /// The registry declined but opened an upload session (at this
    /// location, when it named one).
    Declined(Option<String>),
    /// No mount: no access to the other repository, or a registry that
    /// does not mount.
    Refused,
}

impl<'a> Repository<'a> {
    /// Repository `name` of `client`'s registry, reporting retries to
    /// `reporter`.
    pub(crate) fn new(
        client: &'a RegistryClient,
        name: &'a str,
        reporter: &'a dyn Reporter,
    ) -> Self {
        Self {
            client,
            name,
            reporter,
        }
    }

    /// `registry/repository`, as references name it.
    pub(crate) fn name(&self) -> String {
        format!("{}/{}", self.client.registry(), self.name)
    }

    /// The repository path, e.g. `broker/python-base`.
    pub(crate) fn short_name(&self) -> &'a str {
        self.name
    }

    /// The client of its registry.
    pub(crate) fn client(&self) -> &'a RegistryClient {
        self.client
    }

    /// Where retries are reported.
    pub(crate) fn reporter(&self) -> &'a dyn Reporter {
        self.reporter
    }

    /// A read of `path` below the repository.
    async fn read(
        &self,
        what: &str,
        path: &str,
        expect: &[StatusCode],
        make: Make<'_>,
    ) -> Result<Response, RegistryError> {
        let path = format!("{}/{path}", self.name);
        let call = Call::pull(self.name, what, &path);
        self.client.call(call, expect, self.reporter, make).await
    }

    /// A write of `path` below the repository.
    async fn write(
        &self,
        call: Call<'_>,
        expect: &[StatusCode],
        make: Make<'_>,
    ) -> Result<Response, RegistryError> {
        self.client.call(call, expect, self.reporter, make).await
    }

    /// HEADs (`Method::HEAD`: answered 200 or 404) or GETs (answered 200,
    /// else an error) manifest `selector`, a tag or digest, with read
    /// access; the caller reads the digest header or the body.
    pub(crate) async fn read_manifest(
        &self,
        method: Method,
        what: &str,
        selector: &str,
    ) -> Result<Response, RegistryError> {
        let expect = if method == Method::HEAD {
            FOUND_OR_NOT
        } else {
            &[StatusCode::OK]
        };
        let request = |http: &reqwest::Client, url: &str| {
            http.request(method.clone(), url)
                .header(ACCEPT, ACCEPT_MANIFESTS)
        };
        let path = format!("manifests/{selector}");
        self.read(what, &path, expect, &request).await
    }

    /// GETs the OCI 1.1 referrers list of `subject`: the response when the
    /// registry answers (200 with the list, or 404 when it has no such
    /// API — Distribution 2.8 answers 404 for paths it does not route).
    pub(crate) async fn get_referrers(&self, subject: &Digest) -> Result<Response, RegistryError> {
        let what = format!("referrers of {}@{subject}", self.name);
        let request = |http: &reqwest::Client, url: &str| {
            http.get(url)
                .header(ACCEPT, "application/vnd.oci.image.index.v1+json")
        };
        let path = format!("referrers/{subject}");
        self.read(&what, &path, FOUND_OR_NOT, &request).await
    }

    /// Starts a GET of a blob; the caller streams and verifies the body.
    pub(crate) async fn get_blob(&self, digest: &Digest) -> Result<Response, RegistryError> {
        let what = format!("download of blob {digest} from {}", self.name);
        let get = |http: &reqwest::Client, url: &str| http.get(url);
        self.read(&what, &format!("blobs/{digest}"), &[StatusCode::OK], &get)
            .await
    }

    /// HEADs manifest `selector` with write access (before a push); the
    /// digest the registry reports, if it has the manifest.
    pub(crate) async fn manifest_digest(
        &self,
        selector: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let what = format!("check of manifest {}:{selector}", self.name);
        let path = format!("{}/manifests/{selector}", self.name);
        let accept =
            |http: &reqwest::Client, url: &str| http.head(url).header(ACCEPT, ACCEPT_MANIFESTS);
        let response = self
            .write(Call::push(self.name, &what, &path), FOUND_OR_NOT, &accept)
            .await?;
        Ok(reported_digest(response.headers()).filter(|_| response.status() == StatusCode::OK))
    }

    /// PUTs a manifest's exact bytes under `selector` (digest or tag) and
    /// checks the digest the registry reports.
    pub(crate) async fn put_manifest(
        &self,
        selector: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let what = format!("push of manifest {}:{selector}", self.name);
        let path = format!("{}/manifests/{selector}", self.name);
        let put = |http: &reqwest::Client, url: &str| {
            http.put(url)
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
        };
        let stored = [StatusCode::CREATED, StatusCode::OK];
        let response = self
            .write(Call::push(self.name, &what, &path), &stored, &put)
            .await?;
        let manifest = || format!("manifest {}:{selector}", self.name);
        self.client
            .check_reported_digest(manifest, digest, response.headers())
    }

    /// Whether the repository holds blob `digest`.
    pub(crate) async fn has_blob(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let what = format!("check of blob {digest} in {}", self.name);
        let path = format!("{}/blobs/{digest}", self.name);
        let head = |http: &reqwest::Client, url: &str| http.head(url);
        let response = self
            .write(Call::push(self.name, &what, &path), FOUND_OR_NOT, &head)
            .await?;
        Ok(response.status() == StatusCode::OK)
    }

    /// Asks the registry to link blob `digest` from repository `from`.
    pub(crate) async fn mount(
        &self,
        from: &str,
        digest: &Digest,
    ) -> Result<MountResult, RegistryError> {
        let what = format!("mount of {digest} from {from} into {}", self.name);
        let path = format!("{}/blobs/uploads/", self.name);
        let digest = digest.to_string();
        let post = |http: &reqwest::Client, url: &str| {
            let query = [("mount", digest.as_str()), ("from", from)];
            http.post(url).query(&query).header(CONTENT_LENGTH, "0")
        };
        let answered = [StatusCode::CREATED, StatusCode::ACCEPTED];
        let call = Call::push(self.name, &what, &path).reading(from);
        Ok(match self.write(call, &answered, &post).await {
            Ok(response) if response.status() == StatusCode::CREATED => MountResult::Mounted,
            Ok(response) => MountResult::Declined(self.location(&response)),
            // No pull access to the other repository, or a registry that
            // refuses mounts, must not stop the push: it uploads instead.
            Err(
                RegistryError::Unauthorized { .. }
                | RegistryError::Status { .. }
                | RegistryError::NotFound { .. },
            ) => MountResult::Refused,
            Err(e) => return Err(e),
        })
    }

    /// Opens an upload session; its location.
    pub(crate) async fn start_upload(&self) -> Result<String, RegistryError> {
        let what = format!("start of an upload to {}", self.name);
        let path = format!("{}/blobs/uploads/", self.name);
        let post = |http: &reqwest::Client, url: &str| http.post(url).header(CONTENT_LENGTH, "0");
        let accepted = [StatusCode::ACCEPTED];
        let response = self
            .write(Call::push(self.name, &what, &path), &accepted, &post)
            .await?;
        self.location(&response)
            .ok_or_else(|| RegistryError::Status {
                registry: self.client.registry().to_owned(),
                what,
                status: 202,
                detail: ": the registry named no upload location".to_owned(),
            })
    }

    /// Cancels the upload session at `location` (a `DELETE`), so the
    /// registry drops what it kept of it.
    pub(crate) async fn cancel_upload(&self, location: &str) -> Result<(), RegistryError> {
        let what = format!("cancel of an upload to {}", self.name);
        let delete = |http: &reqwest::Client, url: &str| http.delete(url);
        // 404: the registry already forgot the session, which is the goal.
        let done = [
            StatusCode::NO_CONTENT,
            StatusCode::OK,
            StatusCode::NOT_FOUND,
        ];
        self.write(Call::push(self.name, &what, location), &done, &delete)
            .await
            .map(drop)
    }

    /// How far the upload session at `location` got: the location to
    /// continue at and the bytes the registry holds (from its `Range`
    /// header); `None` when the registry no longer knows the session or
    /// refuses to continue it.
    pub(crate) async fn upload_status(
        &self,
        location: &str,
    ) -> Result<Option<(String, u64)>, RegistryError> {
        let what = format!("status of an upload to {}", self.name);
        let get = |http: &reqwest::Client, url: &str| http.get(url);
        let response = match self
            .write(
                Call::push(self.name, &what, location),
                &[StatusCode::NO_CONTENT],
                &get,
            )
            .await
        {
            Ok(response) => response,
            // Unknown (expired) or invalid (Distribution: the registry holds
            // bytes past the offset signed into the location).
            Err(RegistryError::NotFound { .. } | RegistryError::Status { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let held = response
            .headers()
            .get(reqwest::header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(range_end)
            .unwrap_or(0);
        let next = self
            .location(&response)
            .unwrap_or_else(|| location.to_owned());
        Ok(Some((next, held)))
    }

    /// The absolute URL of an upload session named by `response`.
    pub(crate) fn location(&self, response: &Response) -> Option<String> {
        response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| self.client.absolute(l))
    }
}

/// The bytes a `Range: 0-N` upload status says the registry holds: N + 1,
/// except `0-0`, which registries send for an empty session.
fn range_end(range: &str) -> Option<u64> {
    let (start, end) = range.trim().trim_start_matches("bytes=").split_once('-')?;
    let (start, end): (u64, u64) = (start.parse().ok()?, end.parse().ok()?);
    if start != 0 {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_count_held_bytes() {
        assert_eq!(range_end("0-0"), Some(0));
        assert_eq!(range_end("0-16777215"), Some(16 * 1024 * 1024));
        assert_eq!(range_end("bytes=0-99"), Some(100));
        assert_eq!(range_end("5-9"), None);
        assert_eq!(range_end("junk"), None);
    }
}
