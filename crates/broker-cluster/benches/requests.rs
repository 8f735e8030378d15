//! API requests per command, counted against the scripted endpoint of the
//! tests (`tests/support`), for the example rendered directory:
//! a first start, a no-change start (target: no writes) and a status
//! (target: a handful of lists, not one call per object). Wall times are
//! of a loopback HTTP/1 endpoint and say nothing about a real cluster.
//!
//! `cargo bench -p broker-cluster --bench requests` (or scripts/bench-cluster)

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use broker_cluster::{Quiet, StartRun};

fn summary(name: &str, requests: &[support::Recorded], took: Duration) {
    let writes = requests.iter().filter(|r| r.is_write()).count();
    // A list is a GET of a collection (its path ends in the plural).
    let lists = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with('s'))
        .count();
    println!(
        "{name:<18} {:>4} requests {:>4} writes {:>4} lists  {:>8.1} ms",
        requests.len(),
        writes,
        lists,
        took.as_secs_f64() * 1000.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = support::serve(None).await;
        let cluster = server.cluster("broker");
        let rendered = support::fixture();
        let run = StartRun {
            dry_run: false,
            force_conflicts: false,
            delete_data: false,
            no_prune: false,
            credentials_changed_in_place: false,
            rotate_credentials: false,
            timeout: Duration::from_secs(30),
        };
        println!("example: {} objects", rendered.objects.len());

        let t = Instant::now();
        cluster.start(&rendered, run, &Quiet).await.unwrap();
        summary("first start", &server.requests(), t.elapsed());

        server.clear();
        let t = Instant::now();
        let outcome = cluster.start(&rendered, run, &Quiet).await.unwrap();
        let requests = server.requests();
        summary("no-change start", &requests, t.elapsed());
        assert!(
            !outcome.wrote && requests.iter().all(|r| !r.is_write()),
            "a no-change start wrote"
        );

        server.clear();
        let t = Instant::now();
        cluster.status(None).await.unwrap();
        summary("status", &server.requests(), t.elapsed());
    });
}
