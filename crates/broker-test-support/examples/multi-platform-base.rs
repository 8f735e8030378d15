//! Pushes the amd64 and arm64 busybox stand-ins to the plain-HTTP registry
//! `HOST` (first argument) as one OCI image index `bases/busybox:1`, and
//! prints its reference: the two-platform base `scripts/bench-multiarch`
//! builds on.

fn main() {
    let Some(host) = std::env::args().nth(1) else {
        eprintln!("usage: multi-platform-base HOST:PORT");
        std::process::exit(2);
    };
    let (amd64, arm64) = (
        broker_test_support::busybox(),
        broker_test_support::busybox_arm64(),
    );
    let (reference, _) = broker_test_support::push_multi_platform_to(
        &host,
        None,
        "bases/busybox",
        "1",
        &[(&amd64, "linux/amd64"), (&arm64, "linux/arm64")],
    );
    println!("{reference}");
}
