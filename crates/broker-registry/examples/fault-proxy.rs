//! The fault proxy of the tests as a process, for `scripts/bench-push`:
//! a registry behind a proxy that fails every n-th request with a mix of
//! faults, as the fault tests do, so a benchmark can time a push through it
//! and count what the client sent.
//!
//! ```text
//! cargo run --release -p broker-registry --example fault-proxy -- \
//!     UPSTREAM_HOST:PORT EVERY HANG_SECS STATS_FILE
//! ```
//!
//! Every `EVERY`-th request gets, in turn, a 503, a connection reset and a
//! hang of `HANG_SECS` (dropped if the client gave up). Prints the proxy's
//! `127.0.0.1:PORT` on stdout, then keeps `STATS_FILE` up to date with
//! `requests faults forwarded_body_bytes` until killed.

use std::time::Duration;

use broker_test_support::{Fault, FaultPolicy, FaultProxy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [upstream, every, hang, stats] = args.as_slice() else {
        eprintln!("usage: fault-proxy UPSTREAM_HOST:PORT EVERY HANG_SECS STATS_FILE");
        std::process::exit(2);
    };
    let (Ok(every), Ok(hang)) = (every.parse::<usize>(), hang.parse::<u64>()) else {
        eprintln!("fault-proxy: EVERY and HANG_SECS are whole numbers");
        std::process::exit(2);
    };
    let policy = FaultPolicy::EveryNthMixed {
        n: every,
        faults: vec![
            Fault::Status(503),
            Fault::ResetConnection,
            Fault::Hang(Duration::from_secs(hang)),
        ],
    };
    let proxy = FaultProxy::start_to(upstream, policy);
    println!("{}", proxy.host());
    loop {
        let line = format!(
            "{} {} {}\n",
            proxy.requests_seen(),
            proxy.faults_injected(),
            proxy.body_bytes_forwarded()
        );
        let temp = format!("{stats}.tmp");
        if std::fs::write(&temp, line)
            .and_then(|()| std::fs::rename(&temp, stats))
            .is_err()
        {
            eprintln!("fault-proxy: cannot write {stats}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
