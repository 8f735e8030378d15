//! Times renders of the example broker (both profiles) in one process:
//! `cargo run --release -p broker-render --example bench-render -- N`.
//! Used by `scripts/bench-render`; prints the median and the fastest render
//! and directory write apart (the write is fsync-bound and depends on the
//! disk), against the 50 ms target.
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
        let mut render_times: Vec<Duration> = Vec::new();
        let mut write_times: Vec<Duration> = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            let rendered = broker_render::render(&inputs).unwrap();
            let rendered_at = Instant::now();
            rendered.write_dir(&out.path().join(profile)).unwrap();
            render_times.push(rendered_at - start);
            write_times.push(rendered_at.elapsed());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for (what, times) in [
            ("render", &mut render_times),
            ("write_dir (fsync per file)", &mut write_times),
        ] {
            times.sort();
            println!(
                "{profile:12} {what:27} median {:7.2} ms, fastest {:7.2} ms over {runs} runs",
                ms(times[times.len() / 2]),
                ms(times[0]),
            );
        }
        println!("{profile:12} target: render + write under 50 ms");
    }
}
