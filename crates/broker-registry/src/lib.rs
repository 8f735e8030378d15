//! Client for OCI distribution registries (Docker Hub, CNCF Distribution,
//! Harbor): credentials, pushes that upload only what is missing and survive a
//! flaky network, pulls that verify every byte, tag resolution and mirroring.
