//! Layer build throughput against `tar -c | gzip -6`, and peak memory.
//!
//! `cargo bench -p broker-oci --bench layer_throughput` generates a tree of
//! about 200 MB in 20,000 files (text-like, semi-compressible content) in a
//! temporary directory, then times, on the same tree:
//!
//! - `tar -cf - -C DIR . | gzip -6 > /dev/null`;
//! - our layer build into a fresh store (walk, content hashing for the cache
//!   key, tar, parallel gzip, blob write), in a child process that reports
//!   its own peak RSS (`VmHWM`);
//! - the same build again, served from the layer cache.
//!
//! It prints wall-clock throughput and the ratio, CPU seconds of both (the
//! machine may be shared: the CPU ratio is the contention-proof figure) and
//! the build's peak RSS. `BENCH_MB` and `BENCH_FILES` change the tree size;
//! `BENCH_PHASES=1` also times the phases (tar to a sink with 1 and 2
//! threads, sha256, in-memory gzip, GNU gzip on the same tar).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use broker_oci::{LayerMapping, LayerOptions, Store, build_layer};

const CHILD_ENV: &str = "BROKER_OCI_BENCH_CHILD";

fn main() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        child(&args);
        return;
    }
    // `cargo bench` passes `--bench`; nothing else to parse.
    let mb: u64 = env_num("BENCH_MB", 200);
    let files: u64 = env_num("BENCH_FILES", 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let t = Instant::now();
    let (bytes, count) = generate(&tree, mb * 1_000_000, files);
    let mb_total = bytes as f64 / 1e6;
    println!(
        "tree: {count} files, {mb_total:.1} MB (generated in {:.1}s)",
        t.elapsed().as_secs_f64()
    );

    // Both contenders read from the page cache: warm it once.
    run_shell(&format!("tar -cf - -C '{}' . > /dev/null", tree.display()));

    let (baseline, baseline_cpu) = time_shell(&format!(
        "tar -cf - -C '{}' . | gzip -6 > /dev/null",
        tree.display()
    ));

    let store = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .env(
            CHILD_ENV,
            format!("{}\n{}", tree.display(), store.display()),
        )
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| -> f64 {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in child output:\n{report}"))
    };
    let cold = field("cold_secs=");
    let cold_cpu = field("cold_cpu_secs=");
    let warm = field("warm_secs=");
    let hwm_kb = field("vmhwm_kb=");
    let gz_mb = field("layer_bytes=") / 1e6;

    println!(
        "tar | gzip -6:        {baseline:6.2}s  {:7.1} MB/s  (cpu {baseline_cpu:.2}s)",
        mb_total / baseline
    );
    println!(
        "broker-oci layer:     {cold:6.2}s  {:7.1} MB/s  (cpu {cold_cpu:.2}s; {gz_mb:.1} MB gzip, {} threads)",
        mb_total / cold,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    println!(
        "broker-oci cache hit: {warm:6.2}s  {:7.1} MB/s",
        mb_total / warm
    );
    println!(
        "throughput ratio (ours / tar|gzip): {:.2}x",
        baseline / cold
    );
    println!(
        "cpu-time ratio (tar|gzip cpu / ours): {:.2}x   load average now: {}",
        baseline_cpu / cold_cpu,
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("peak RSS of the layer build: {:.1} MB", hwm_kb / 1024.0);
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall and CPU seconds (user + system, children included) of `script`.
fn time_shell(script: &str) -> (f64, f64) {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%U %S", "sh", "-c", script])
        .output();
    let wall = t.elapsed().as_secs_f64();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stderr);
            let cpu = text
                .lines()
                .last()
                .map(|l| l.split(' ').filter_map(|v| v.parse::<f64>().ok()).sum())
                .unwrap_or(f64::NAN);
            (wall, cpu)
        }
        _ => {
            // No GNU time: wall clock only.
            let t = Instant::now();
            run_shell(script);
            (t.elapsed().as_secs_f64(), f64::NAN)
        }
    }
}

fn run_shell(script: &str) {
    let ok = Command::new("sh")
        .args(["-c", script])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{script} failed");
}

/// In the child: build cold, then again from the cache; report times and
/// this process's peak RSS.
fn child(args: &str) {
    let (tree, store) = args.split_once('\n').unwrap();
    let store = Store::open(Path::new(store)).unwrap();
    let mapping = LayerMapping::new(PathBuf::from(tree), "/home/broker/app");
    let opts = LayerOptions::default();
    let t = Instant::now();
    let c = cpu_secs();
    let layer = build_layer(&store, &mapping, &opts).unwrap();
    let cold = t.elapsed().as_secs_f64();
    let cold_cpu = cpu_secs() - c;
    let t = Instant::now();
    let again = build_layer(&store, &mapping, &opts).unwrap();
    let warm = t.elapsed().as_secs_f64();
    assert!(again.from_cache && again.digest == layer.digest);
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    if std::env::var_os("BENCH_PHASES").is_some() {
        for threads in [1, 2] {
            let t = Instant::now();
            broker_oci::write_layer(&mapping, std::io::sink(), threads).unwrap();
            eprintln!(
                "write_layer to a sink, {threads} thread(s): {:.2}s",
                t.elapsed().as_secs_f64()
            );
        }
        let (tar, _) = broker_oci::write_layer(&mapping, Vec::new(), 2).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&tar[..]), &mut raw).unwrap();
        let t = Instant::now();
        let d = broker_oci::Digest::of(&raw);
        eprintln!(
            "sha256 of {} MB in memory: {:.2}s {d}",
            raw.len() / 1_000_000,
            t.elapsed().as_secs_f64()
        );
        for threads in [1, 2] {
            let t = Instant::now();
            let c = cpu_secs();
            let _ = broker_oci::gzip::compress_bytes(&raw, threads);
            eprintln!(
                "gzip in memory, {threads} thread(s): {:.2}s wall, {:.2}s cpu",
                t.elapsed().as_secs_f64(),
                cpu_secs() - c
            );
        }
        let raw_path = Path::new(tree).with_extension("rawtar");
        fs::write(&raw_path, &raw).unwrap();
        let t = Instant::now();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "/usr/bin/time -f '%U %S' gzip -6 -c '{}' > /dev/null",
                raw_path.display()
            ))
            .output()
            .unwrap();
        eprintln!(
            "GNU gzip -6 of the same tar: {:.2}s wall, cpu user/sys {}",
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
        fs::remove_file(&raw_path).unwrap();
        let t = Instant::now();
        let opts = LayerOptions {
            threads: 2,
            use_cache: false,
        };
        build_layer(&store, &mapping, &opts).unwrap();
        eprintln!(
            "build_layer without cache: {:.2}s",
            t.elapsed().as_secs_f64()
        );
    }
    println!("cold_secs={cold}");
    println!("cold_cpu_secs={cold_cpu}");
    println!("warm_secs={warm}");
    println!("vmhwm_kb={hwm}");
    println!("layer_bytes={}", layer.size);
}

/// CPU seconds (user + system) of this process so far, all threads.
fn cpu_secs() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Write about `total` bytes of text-like content in `files` files, in
/// nested directories: mostly small files, some medium, a few large.
fn generate(root: &Path, total: u64, files: u64) -> (u64, u64) {
    const WORDS: &[&str] = &[
        "broker",
        "mqtt",
        "payload",
        "device",
        "gateway",
        "uplink",
        "downlink",
        "formatter",
        "decode",
        "encode",
        "return",
        "function",
        "const",
        "import",
        "from",
        "self",
        "value",
        "temperature",
        "humidity",
        "battery",
        "rssi",
        "snr",
        "frequency",
        "timestamp",
        "if",
        "else",
        "for",
        "while",
        "None",
        "True",
        "False",
        "module.exports",
        "require",
        "def",
        "class",
        "async",
        "await",
        "=",
        "==",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ";",
        ":",
        ",",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Size classes by count: 90% small, 9.5% medium, 0.5% large; scaled so
    // that the expected total is `total`.
    let weights = [(0.90, 1.0), (0.095, 10.0), (0.005, 120.0)];
    let mean_units: f64 = weights.iter().map(|(p, u)| p * u).sum();
    let unit = total as f64 / (files as f64 * mean_units);
    let mut written = 0u64;
    let mut buf = Vec::new();
    for i in 0..files {
        let r = (next() % 1000) as f64 / 1000.0;
        let units = if r < weights[0].0 {
            weights[0].1
        } else if r < weights[0].0 + weights[1].0 {
            weights[1].1
        } else {
            weights[2].1
        };
        let size = (unit * units * (0.5 + (next() % 1000) as f64 / 1000.0)) as usize;
        buf.clear();
        let mut line = 0;
        while buf.len() < size {
            let w = WORDS[(next() % WORDS.len() as u64) as usize];
            buf.extend_from_slice(w.as_bytes());
            line += 1;
            if line % 12 == 0 {
                buf.extend_from_slice(format!(" {}\n", next() % 100_000).as_bytes());
            } else {
                buf.push(b' ');
            }
        }
        buf.truncate(size);
        let dir = root.join(format!(
            "pkg{:02}/mod{:03}/sub{}",
            i % 37,
            (i / 37) % 113,
            i % 3
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("file{i:05}.txt")), &buf).unwrap();
        written += size as u64;
    }
    (written, files)
}
