//! What a request that got no HTTP answer ran into, read off its error's
//! chain of causes. The registry client and the cluster client each say
//! it in their own words, because what to check differs (a registry's host
//! and port, a kubeconfig's server address); the reading is the same.

use std::error::Error;
use std::io::ErrorKind;

/// The causes of a transport error, read once: the first I/O error kind
/// among them and their texts, lowercased.
#[derive(Clone, Debug)]
pub struct TransportCauses {
    io_kind: Option<ErrorKind>,
    texts: Vec<String>,
}

impl TransportCauses {
    /// Walks `error` and its sources.
    pub fn of(error: &(dyn Error + 'static)) -> Self {
        let mut io_kind = None;
        let mut texts = Vec::new();
        let mut source = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                io_kind.get_or_insert(io.kind());
            }
            texts.push(e.to_string().to_lowercase());
            source = e.source();
        }
        Self { io_kind, texts }
    }

    /// Nothing listens at the address.
    pub fn refused(&self) -> bool {
        self.io_kind == Some(ErrorKind::ConnectionRefused)
    }

    /// The host name did not resolve (hyper's and the system resolver's
    /// wording, which no error kind carries).
    pub fn unresolved(&self) -> bool {
        self.any(&["dns error", "failed to lookup"])
    }

    /// No answer in time, by error kind or by a timer's wording.
    pub fn timed_out(&self) -> bool {
        self.io_kind == Some(ErrorKind::TimedOut) || self.any(&["elapsed", "timed out", "timeout"])
    }

    /// The connection was cut after it was made.
    pub fn cut(&self) -> bool {
        matches!(
            self.io_kind,
            Some(ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe)
        )
    }

    /// No route to the network or host.
    pub fn unroutable(&self) -> bool {
        matches!(
            self.io_kind,
            Some(ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable)
        )
    }

    /// The innermost cause about TLS or a certificate, when there is one.
    pub fn tls(&self) -> Option<&str> {
        self.texts
            .iter()
            .rev()
            .find(|t| t.contains("certificate") || t.contains("tls"))
            .map(String::as_str)
    }

    /// The innermost cause: what a failure none of the above is ends with.
    pub fn innermost(&self) -> &str {
        self.texts.last().map_or("", String::as_str)
    }

    fn any(&self, needles: &[&str]) -> bool {
        self.texts
            .iter()
            .any(|t| needles.iter().any(|n| t.contains(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.1)
        }
    }

    #[test]
    fn the_io_kind_below_a_wrapper_is_read() {
        let refused = Wrapped(
            "client error (Connect)",
            std::io::Error::from(ErrorKind::ConnectionRefused),
        );
        let causes = TransportCauses::of(&refused);
        assert!(causes.refused() && !causes.cut() && !causes.timed_out());
        let cut = TransportCauses::of(&Wrapped(
            "x",
            std::io::Error::from(ErrorKind::ConnectionReset),
        ));
        assert!(cut.cut() && !cut.refused());
    }

    #[test]
    fn wording_without_a_kind_is_read_too() {
        let dns = Wrapped(
            "client error (Connect)",
            std::io::Error::other("dns error: failed to lookup address information"),
        );
        let causes = TransportCauses::of(&dns);
        assert!(causes.unresolved() && !causes.refused());
        assert_eq!(
            causes.innermost(),
            "dns error: failed to lookup address information"
        );
        let tls = TransportCauses::of(&Wrapped(
            "error",
            std::io::Error::other("invalid peer certificate: UnknownIssuer"),
        ));
        assert_eq!(tls.tls(), Some("invalid peer certificate: unknownissuer"));
    }
}
