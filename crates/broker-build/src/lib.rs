//! The build stage: image specs under `images/`, the dependency stage through
//! the Docker engine, source layers baked on top, and `images.lock`.
