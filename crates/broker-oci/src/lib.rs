//! The image half that needs no network and no Docker engine: deterministic
//! source layers, the OCI image model (config, manifest, index) and the local
//! OCI image layout store that every later stage reads from.
