//! Times renders of the example broker (both profiles) in one process:
//! `cargo run --release -p broker-render --example bench-render -- N`.
//! Used by `scripts/bench-render`; prints the median and the fastest render
//! against the 50 ms target.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark, not the tool

use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let fixtures = root.join("crates/broker-render/tests/fixtures");
    let out = tempfile::tempdir().unwrap();
    for (profile, env_file) in [
        ("single-node", root.join("environments/env.sample")),
        ("cluster", fixtures.join("cluster.env")),
    ] {
        let environment = root.join(format!("environments/{profile}.yaml"));
        let inputs = broker_render::Inputs {
            lock: &fixtures.join("images.lock"),
            source: &root.join("examples/broker"),
            environment: &environment,
            env_file: Some(&env_file),
            manifests: &root.join("manifests"),
            require_pinned: true,
        };
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let rendered = broker_render::render(&inputs).unwrap();
                rendered.write_dir(&out.path().join(profile)).unwrap();
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{profile:12} render + write_dir, in process: median {:.2} ms, fastest {:.2} ms over {runs} runs (target < 50 ms)",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
        );
    }
}
