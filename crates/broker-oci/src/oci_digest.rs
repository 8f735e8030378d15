//! Conversions between our [`Digest`] and `oci-spec`'s digest type. They
//! live here, not beside [`Digest`], so the shared types crate needs no
//! OCI model dependency.

use std::str::FromStr;

use crate::digest::{Digest, ParseDigestError};

/// Our digest as an `oci-spec` digest, for descriptors.
#[must_use]
pub fn to_oci(digest: &Digest) -> oci_spec::image::Digest {
    match oci_spec::image::Sha256Digest::from_str(&digest.hex()) {
        Ok(sha) => sha.into(),
        // 64 lowercase hex digits are exactly what oci-spec accepts.
        Err(e) => unreachable!("oci-spec refused a valid sha256 digest: {e}"),
    }
}

/// An `oci-spec` digest as ours; an error for any algorithm but sha256.
///
/// # Errors
/// When the digest is not `sha256:` + 64 lowercase hex digits.
pub fn from_oci(digest: &oci_spec::image::Digest) -> Result<Digest, ParseDigestError> {
    digest.to_string().parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_and_from_oci_spec() {
        let d = Digest::of(b"x");
        let o = to_oci(&d);
        assert_eq!(o.to_string(), d.to_string());
        assert_eq!(from_oci(&o).unwrap(), d);
    }
}
