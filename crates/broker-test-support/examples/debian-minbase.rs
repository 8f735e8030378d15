//! Makes (or reuses) the Debian minbase base image the tests use and prints
//! its reference in the Docker engine. The demo builds on it, because no
//! image can be pulled from Docker Hub here.

fn main() {
    println!("{}", broker_test_support::debian_minbase().docker_ref);
}
