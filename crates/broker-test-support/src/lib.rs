//! Fixtures that start the real components tests run against: a CNCF
//! Distribution registry, the Docker engine, and locally made base images.
#![allow(clippy::unwrap_used, clippy::expect_used)]
