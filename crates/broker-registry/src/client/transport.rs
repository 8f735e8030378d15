//! How a client reaches its registry: HTTPS, plain HTTP for hosts the user
//! marked insecure, and for loopback hosts whichever the server speaks
//! (probed once, plain HTTP first). Also the reqwest clients themselves and
//! the reading of extra CA files.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use super::{ClientOptions, RegistryClient, error_chain};
use crate::error::RegistryError;

/// True when `host` (optionally with `:port`) is a loopback address, which
/// Docker also treats as an insecure (plain HTTP) registry.
pub fn is_loopback(host: &str) -> bool {
    let bare = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How a client reaches its registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Always HTTPS, certificates checked.
    Https,
    /// Plain HTTP: the user named the host with `--insecure-registry`.
    Http,
    /// Loopback hosts: HTTPS if the server speaks it, else plain HTTP —
    /// as Docker does for 127.0.0.0/8, but never skipping certificate checks.
    HttpsOrHttp,
}

impl Transport {
    /// The transport for `registry` (as written in references) served at
    /// `api_host`.
    pub(crate) fn choose(registry: &str, api_host: &str, options: &ClientOptions) -> Self {
        if options
            .insecure_registries
            .iter()
            .any(|h| h == registry || h == api_host)
        {
            Self::Http
        } else if is_loopback(registry) {
            Self::HttpsOrHttp
        } else {
            Self::Https
        }
    }
}

/// The certificates of every `--ca-file`, read once per client.
pub(crate) fn extra_roots(
    ca_files: &[impl AsRef<Path>],
) -> Result<Vec<reqwest::Certificate>, RegistryError> {
    let mut certs = Vec::new();
    for path in ca_files {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| RegistryError::Io {
            what: "cannot read CA file",
            path: path.to_path_buf(),
            source,
        })?;
        let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            RegistryError::NoCertificate {
                path: path.to_path_buf(),
                why: Some(error_chain(&e)),
            }
        })?;
        if found.is_empty() {
            return Err(RegistryError::NoCertificate {
                path: path.to_path_buf(),
                why: None,
            });
        }
        certs.extend(found);
    }
    Ok(certs)
}

impl RegistryClient {
    /// `scheme://host/v2/<path>`.
    pub(crate) async fn url(&self, path: &str) -> Result<String, RegistryError> {
        Ok(format!("{}/v2/{path}", self.base_url().await?))
    }

    async fn base_url(&self) -> Result<&str, RegistryError> {
        self.base_url
            .get_or_try_init(|| async {
                let scheme = match self.transport {
                    Transport::Http => "http",
                    Transport::Https => "https",
                    // A server that accepts and never answers must not
                    // hold the probe for two read timeouts.
                    Transport::HttpsOrHttp => self
                        .silence
                        .watch(self.probe_scheme())
                        .await
                        .ok_or_else(|| self.unresponsive())??
                        // Unreachable either way: requests will retry and
                        // report.
                        .unwrap_or("http"),
                };
                Ok(format!("{scheme}://{}", self.api_host))
            })
            .await
            .map(String::as_str)
    }

    /// Gets the client ready for its first request while the caller does
    /// other work (a build before its push): the scheme of a loopback
    /// registry probed — the one request a no-change push otherwise waits
    /// for before its manifest checks — and the HTTP client made, with its
    /// TLS roots. Sends nothing else, so a registry sees the requests it
    /// saw before, only earlier. A probe nobody answered decides nothing:
    /// the first request probes again, as it would have without this.
    pub async fn warm_up(&self) {
        if self.transport == Transport::HttpsOrHttp {
            let _ = self
                .base_url
                .get_or_try_init(|| async {
                    match self.silence.watch(self.probe_scheme()).await {
                        Some(Ok(Some(scheme))) => Ok(format!("{scheme}://{}", self.api_host)),
                        _ => Err(()),
                    }
                })
                .await;
            if self.base_url.get().is_none() {
                return;
            }
        }
        let _ = self.http().await;
    }

    /// Resolves an upload `Location` header, which may be relative.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            let base = self.base_url.get().map_or("", String::as_str);
            format!("{base}/{}", location.trim_start_matches('/'))
        }
    }

    /// For loopback registries: plain HTTP when the server speaks it, else
    /// HTTPS with its certificate checked like any other. Plain HTTP is
    /// asked first because a TLS server answers it at once, while a TLS
    /// handshake costs a loopback push more than all its requests.
    ///
    /// `None` when neither answered.
    async fn probe_scheme(&self) -> Result<Option<&'static str>, RegistryError> {
        let bare = self.request_client(false)?;
        match bare
            .get(format!("http://{}/v2/", self.api_host))
            .send()
            .await
        {
            // Go's TLS servers answer a plain request with this 400.
            Ok(response) => {
                let tls_server = response.status() == StatusCode::BAD_REQUEST
                    && response
                        .text()
                        .await
                        .unwrap_or_default()
                        .contains("HTTPS server");
                if tls_server {
                    return Ok(Some("https"));
                }
                // Exactly the client `http()` would make for this registry:
                // keep it, and its open connection.
                let _ = self.http.set(bare);
                Ok(Some("http"))
            }
            Err(_) => {
                match self
                    .request_client(true)?
                    .get(format!("https://{}/v2/", self.api_host))
                    .send()
                    .await
                {
                    Err(err) => match tls_problem(&err) {
                        Some(why) => Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            why,
                        }),
                        None => Ok(None),
                    },
                    Ok(_) => Ok(Some("https")),
                }
            }
        }
    }

    /// The HTTP client for requests whose body streams a blob.
    pub(crate) async fn upload_http(&self) -> Result<&reqwest::Client, RegistryError> {
        let system_roots = self.needs_system_roots().await?;
        self.upload_http
            .get_or_try_init(|| async {
                http_client(&self.options, &self.extra_roots, None, system_roots)
            })
            .await
    }

    /// The HTTP client for every other request.
    pub(crate) async fn http(&self) -> Result<&reqwest::Client, RegistryError> {
        let system_roots = self.needs_system_roots().await?;
        self.http
            .get_or_try_init(|| async { self.request_client(system_roots) })
            .await
    }

    /// A client for requests that are not uploads: reqwest's read timeout
    /// set, system roots when `system_roots`.
    fn request_client(&self, system_roots: bool) -> Result<reqwest::Client, RegistryError> {
        let timeout = Some(self.options.read_timeout);
        http_client(&self.options, &self.extra_roots, timeout, system_roots)
    }

    /// Whether TLS connections may need the system's roots: always, except
    /// for a loopback registry that speaks plain HTTP — a local registry
    /// does not redirect to public HTTPS storage, and loading the roots
    /// (one file per CA) costs a no-op push more than all its requests.
    async fn needs_system_roots(&self) -> Result<bool, RegistryError> {
        let base = self.base_url().await?;
        Ok(!(self.transport == Transport::HttpsOrHttp && base.starts_with("http://")))
    }
}

/// A reqwest client for `options`, trusting `extra_roots` besides the
/// system roots, with reqwest's read timeout when given.
///
/// reqwest's read timeout runs from sending a request to its answer, then
/// per read of the answer's body: right for everything but uploads, where
/// it would cut off any upload taking longer (those pass `None`).
fn http_client(
    options: &ClientOptions,
    extra_roots: &[reqwest::Certificate],
    read_timeout: Option<Duration>,
    system_roots: bool,
) -> Result<reqwest::Client, RegistryError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .user_agent(concat!("broker-images/", env!("CARGO_PKG_VERSION")))
        // Redirects to blob storage (S3, CDN) must not carry our
        // registry credentials; reqwest drops Authorization on
        // cross-host redirects.
        .redirect(reqwest::redirect::Policy::limited(10));
    if let Some(timeout) = read_timeout {
        builder = builder.read_timeout(timeout);
    }
    if !system_roots {
        builder = builder.tls_certs_only(extra_roots.to_vec());
    } else if !extra_roots.is_empty() {
        builder = builder.tls_certs_merge(extra_roots.to_vec());
    }
    if options.skip_tls_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| RegistryError::HttpClient {
        why: error_chain(&e),
    })
}

/// A certificate problem in the chain of `err`, explained with the flag
/// that fixes it.
pub(crate) fn tls_problem(err: &reqwest::Error) -> Option<String> {
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    let is_cert = lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer");
    is_cert.then(|| {
        format!("the server's certificate is not trusted ({chain}); pass --ca-file with the CA that signed it (or, for a throwaway registry only, --insecure-skip-tls-verify)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_insecure_by_default() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.3.4.5"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }
}
