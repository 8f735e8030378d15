//! One rustls crypto provider in the whole binary: a registry client
//! (reqwest) and a kube client both make TLS connections in one process.
//! With two providers compiled in, rustls cannot pick one and the kube
//! client panics on its first HTTPS connection. Checked to fail: with
//! kube's `ring` feature instead of `aws-lc-rs` (kube's default) this test
//! panics with "Could not automatically determine the process-level
//! CryptoProvider".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use broker_registry::{ClientOptions, Reference, RegistryClient, Silent};

#[tokio::test]
async fn registry_and_kube_clients_share_one_rustls_provider() {
    // A port nothing listens on: each client must get as far as building
    // its TLS configuration and trying to connect, then fail cleanly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // Not a loopback host, so the registry client builds its HTTPS
    // client (rustls configuration included) before failing to resolve.
    let reference: Reference = format!("registry.invalid:{port}/broker/x:latest")
        .parse()
        .unwrap();
    let options = ClientOptions {
        retry: broker_registry::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        },
        ..ClientOptions::default()
    };
    let registry = RegistryClient::for_reference(&reference, &options).unwrap();
    let resolved = tokio::time::timeout(
        Duration::from_secs(30),
        broker_registry::resolve(&registry, &reference, &Silent),
    )
    .await
    .unwrap();
    assert!(resolved.is_err(), "nothing listens there");

    let mut config = kube::Config::new(format!("https://127.0.0.1:{port}").parse().unwrap());
    config.connect_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(config).unwrap();
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let answer = tokio::spawn(async move { api.get_opt("broker").await.map(|_| ()) }).await;
    // A panic inside the kube client (no provider chosen) shows up here.
    let answer = answer.expect("kube client panicked: more than one rustls provider?");
    assert!(answer.is_err(), "nothing listens there");
}
