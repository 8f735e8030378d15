//! Builds (or reuses) the postgres and rabbitmq stand-ins and prints their
//! references in the Docker engine. With `--push HOST[:PORT]/PREFIX --lock
//! FILE` it also copies them there with skopeo (plain HTTP for a loopback
//! registry) and records them in the lock under the catalogue's references
//! (`postgres:14.2`, `rabbitmq:3.9-management`), as `broker-images mirror`
//! would record the official images: render then pins db and mq to them.
//!
//! ```sh
//! cargo run -p broker-test-support --example standin-images -- \
//!     --push 127.0.0.1:5000/mirror --lock images.lock
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use broker_test_support::Standin;
use broker_test_support::standins::record_mirror;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut push, mut lock) = (None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--push" => push = args.next(),
            "--lock" => lock = args.next().map(PathBuf::from),
            other => {
                eprintln!("error: unknown argument {other}: use [--push HOST/PREFIX --lock FILE]");
                return ExitCode::from(2);
            }
        }
    }
    for standin in Standin::ALL {
        let image = standin.image();
        println!("{} {}", standin.catalogue_reference(), image.docker_ref);
        let (Some(prefix), Some(lock)) = (&push, &lock) else {
            continue;
        };
        let target = format!("{prefix}/{}:{}", standin.repository(), standin.tag());
        let digest_file =
            std::env::temp_dir().join(format!("standin-{}.digest", std::process::id()));
        let mut copy = Command::new("skopeo");
        copy.args(["--insecure-policy", "copy"]);
        if prefix.starts_with("127.") || prefix.starts_with("localhost") {
            copy.arg("--dest-tls-verify=false");
        }
        let status = copy
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(image.oci_ref())
            .arg(format!("docker://{target}"))
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "error: skopeo could not copy {} to {target}",
                image.docker_ref
            );
            return ExitCode::FAILURE;
        }
        let digest = std::fs::read_to_string(&digest_file).unwrap_or_default();
        let _ = std::fs::remove_file(&digest_file);
        let repository = target.rsplit_once(':').map_or(target.as_str(), |(r, _)| r);
        let pinned = format!("{repository}@{}", digest.trim());
        record_mirror(standin, &pinned, lock);
        println!(
            "  pushed {pinned}, recorded in {} as {}",
            lock.display(),
            standin.catalogue_reference()
        );
    }
    ExitCode::SUCCESS
}
