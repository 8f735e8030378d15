//! The binary's own surface: what `--help` lists, and what a user reads when
//! the input is bad — one line (`error: what: why: root cause`, each cause
//! once), or with `--json` one JSON object `{"error", "causes"}`.
//!
//! The error texts are insta snapshots (`tests/snapshots/`), so a change of
//! wording shows in review. Temporary paths are replaced by `[WS]` and the
//! repository by `[REPO]` before comparing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use broker_test_support::{Workspace, busybox, repo_root};

fn workspace() -> Workspace {
    Workspace::new(env!("CARGO_BIN_EXE_broker-images"))
}

/// What a failed run says: the `error:` line, or with `--json` the error
/// object, with this machine's paths normalised. Also checks the form: one
/// error, and (as JSON) an object with a string `error` and a list of
/// string `causes`, none of which repeats the one before.
fn failure(ws: &Workspace, out: &Output, json: bool) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = if json {
        stderr
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v.get("error").is_some())
            })
            .collect()
    } else {
        stderr.lines().filter(|l| l.starts_with("error:")).collect()
    };
    assert_eq!(errors.len(), 1, "not one error:\n{stderr}");
    let error = errors[0];
    if json {
        let value: serde_json::Value = serde_json::from_str(error).unwrap();
        let causes = value["causes"].as_array().expect("causes is a list");
        let mut chain = vec![value["error"].as_str().expect("error is a string")];
        chain.extend(
            causes
                .iter()
                .map(|c| c.as_str().expect("causes are strings")),
        );
        for pair in chain.windows(2) {
            assert!(!pair[0].contains(pair[1]), "a cause repeats: {error}");
        }
    }
    normalise(ws, error)
}

fn normalise(ws: &Workspace, text: &str) -> String {
    let dir = ws.dir().to_string_lossy().into_owned();
    let canonical = ws.dir().canonicalize().unwrap();
    text.replace(&canonical.to_string_lossy().into_owned(), "[WS]")
        .replace(&dir, "[WS]")
        .replace(&repo_root().to_string_lossy().into_owned(), "[REPO]")
}

/// Runs `args` plain and with `--json`; snapshots both errors as `name`
/// and `name_json`.
fn snapshot_both(ws: &Workspace, name: &str, args: &[&str]) {
    let plain = failure(ws, &ws.run(args), false);
    insta::assert_snapshot!(name, plain);
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(args);
    let json = failure(ws, &ws.run(&json_args), true);
    insta::assert_snapshot!(format!("{name}_json"), json);
}

#[test]
fn help_lists_only_the_commands_that_are_built() {
    let ws = workspace();
    let out = ws.run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        [
            "build", "push", "mirror", "verify", "sign", "render", "start", "stop", "restart",
            "status", "history", "rollback", "dev", "help"
        ],
        "{help}"
    );
    // Every listed command has its own usage and options.
    for command in &commands[..commands.len() - 1] {
        let out = ws.run(&[command, "--help"]);
        assert!(out.status.success(), "`{command} --help` fails");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Usage: broker-images {command}")),
            "{text}"
        );
    }
}

#[test]
fn bad_input_errors_read_as_snapshotted() {
    let ws = workspace();
    let images = repo_root().join("images");
    let images = images.to_str().unwrap();

    // The broker tree does not exist.
    snapshot_both(
        &ws,
        "missing_source",
        &["build", "--images", images, "--source", "no-such-tree"],
    );

    // A malformed spec: file, line and column.
    let bad_images = ws.path("images");
    broker_test_support::copy_dir(&repo_root().join("images"), &bad_images);
    std::fs::write(
        bad_images.join("mgmt-app/image.yaml"),
        "deps:\n  base: x\nlayers:\n  - name: www\n    from: src/www\n    to: /app\n    owner: [1, 2\n",
    )
    .unwrap();
    std::fs::create_dir_all(ws.path("broker")).unwrap();
    snapshot_both(
        &ws,
        "malformed_spec",
        &["build", "--images", "images", "--source", "broker"],
    );

    // A lock file that is not one: nothing is built.
    std::fs::write(ws.path("images.lock"), "{\"version\": 1, \"images\": [}\n").unwrap();
    snapshot_both(
        &ws,
        "malformed_lock",
        &["build", "--images", images, "--source", "broker"],
    );

    // verify without a lock.
    snapshot_both(
        &ws,
        "verify_without_lock",
        &["verify", "--images", images, "--lock", "none.lock"],
    );

    // push from a store that was never built.
    std::fs::remove_dir_all(ws.path("store")).unwrap();
    snapshot_both(
        &ws,
        "push_without_store",
        &["push", "app", "--registry", "127.0.0.1:9/broker"],
    );

    // A registry prefix that is not one, refused while parsing arguments.
    snapshot_both(
        &ws,
        "bad_registry_prefix",
        &["push", "app", "--registry", "Registry.Example/UPPER"],
    );
}

/// The case of issue 11: a fifo in a source tree. Before, the cause was
/// printed twice on the one line.
#[test]
fn a_fifo_in_a_source_tree_is_one_error_saying_each_cause_once() {
    let ws = workspace();
    let images = ws.path("images/fifo");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n").unwrap();
    std::fs::write(
        images.join("image.yaml"),
        "deps:\n  base: unused\nlayers:\n  - name: app\n    from: src\n    to: /app\n",
    )
    .unwrap();
    std::fs::create_dir_all(ws.path("broker/src")).unwrap();
    std::fs::write(ws.path("broker/src/main.py"), "print('hi')\n").unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(ws.path("broker/src/pipe"))
        .status()
        .unwrap()
        .success();
    assert!(made, "mkfifo failed");
    let base = format!("fifo={}", busybox().docker_ref);
    snapshot_both(
        &ws,
        "fifo_in_source_tree",
        &[
            "build", "--images", "images", "--source", "broker", "--base", &base,
        ],
    );
}

/// Issue 20: a file name that is not UTF-8 is shown with its bytes
/// escaped (`bad\xff\xfename.py`), so it can be found and excluded, not
/// with U+FFFD.
#[test]
fn a_non_utf8_file_name_is_shown_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let ws = workspace();
    let images = ws.path("images/odd");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("Dockerfile"), "ARG BASE\nFROM ${BASE}\n").unwrap();
    std::fs::write(
        images.join("image.yaml"),
        "deps:\n  base: unused\nlayers:\n  - name: app\n    from: src\n    to: /app\n",
    )
    .unwrap();
    std::fs::create_dir_all(ws.path("broker/src")).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff\xfename.py");
    std::fs::write(ws.path("broker/src").join(name), "print('hi')\n").unwrap();
    let base = format!("odd={}", busybox().docker_ref);
    snapshot_both(
        &ws,
        "non_utf8_file_name",
        &[
            "build", "--images", "images", "--source", "broker", "--base", &base,
        ],
    );
}

/// Issue 20, item 2: a stall timeout at or above the give-up budget would
/// make one stalled request end the run; it is refused up front.
#[test]
fn a_stall_timeout_not_below_the_give_up_budget_is_refused() {
    let ws = workspace();
    broker_test_support::synthetic::image(&ws.store(), "app", 40, 1, 1024);
    snapshot_both(
        &ws,
        "stall_timeout_not_below_give_up",
        &[
            "push",
            "app",
            "--registry",
            "127.0.0.1:9/broker",
            "--stall-timeout",
            "60",
            "--give-up-after",
            "30",
        ],
    );
}

/// Issue 22 item 3: cluster-side bad input is one line saying each cause
/// once — no YAML excerpt, no path twice, no position twice, no kube or
/// hyper type names.
#[test]
fn cluster_input_errors_read_as_snapshotted() {
    let ws = workspace();
    std::fs::write(ws.path("bad-kubeconfig"), "garbage: [\n").unwrap();
    snapshot_both(
        &ws,
        "malformed_kubeconfig",
        &["status", "--kubeconfig", "bad-kubeconfig"],
    );
    snapshot_both(
        &ws,
        "missing_kubeconfig",
        &["status", "--kubeconfig", "no-such-kubeconfig"],
    );
    snapshot_both(
        &ws,
        "missing_manifests",
        &[
            "start",
            "--manifests",
            "no-such-dir",
            "--kubeconfig",
            "bad-kubeconfig",
        ],
    );
    std::fs::write(
        ws.path("newer.lock"),
        "{\"version\": 2, \"written_by\": \"broker-images 0.9.0\", \"platforms\": {}}\n",
    )
    .unwrap();
    snapshot_both(
        &ws,
        "newer_lock",
        &[
            "status",
            "--lock",
            "newer.lock",
            "--kubeconfig",
            "bad-kubeconfig",
        ],
    );
    std::fs::write(ws.path("damaged.lock"), "{\"version\": 1, \"images\": {\n").unwrap();
    snapshot_both(
        &ws,
        "damaged_lock",
        &[
            "status",
            "--lock",
            "damaged.lock",
            "--kubeconfig",
            "bad-kubeconfig",
        ],
    );
    // Port 1 on loopback: nothing listens, the connection is refused.
    std::fs::write(
        ws.path("refused-kubeconfig"),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    snapshot_both(
        &ws,
        "refused_api_server",
        &["status", "--kubeconfig", "refused-kubeconfig"],
    );
}

/// Issue 22 item 3: a registry nothing listens on, and one whose name does
/// not resolve, are said in words, without reqwest's and hyper's
/// (`error sending request for url (…): client error (Connect)`).
#[test]
fn unreachable_registries_say_what_to_check() {
    let ws = workspace();
    // Port 9 (discard) on loopback: nothing listens there.
    snapshot_both(
        &ws,
        "refused_registry",
        &[
            "mirror",
            "127.0.0.1:9/library/postgres:14.2",
            "--registry",
            "127.0.0.1:9/mirror",
            "--retries",
            "1",
        ],
    );
    // `.invalid` never resolves (RFC 6761).
    snapshot_both(
        &ws,
        "unresolved_registry",
        &[
            "mirror",
            "registry.invalid/library/postgres:14.2",
            "--registry",
            "127.0.0.1:9/mirror",
            "--retries",
            "1",
        ],
    );
}

/// Issue 22 item 9: status waits for nothing, so it offers no --timeout;
/// the commands that wait say what for.
#[test]
fn only_the_commands_that_wait_take_a_timeout() {
    let ws = workspace();
    let help = |command: &str| {
        let out = ws.run(&[command, "--help"]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!help("status").contains("--timeout"), "{}", help("status"));
    for command in ["start", "stop", "restart", "dev"] {
        let text = help(command);
        assert!(text.contains("--timeout <SECONDS>"), "{text}");
        assert!(text.contains("--lease-wait <SECONDS>"), "{text}");
    }
    assert!(help("stop").contains("for their pods to go (stop)"));
    // The options every command takes are under their own heading, apart
    // from the command's own.
    let status = help("status");
    let (own, global) = status.split_once("Global options:").unwrap();
    assert!(
        own.contains("--kubeconfig") && !own.contains("--json"),
        "{status}"
    );
    assert!(
        global.contains("--json") && global.contains("--verbose"),
        "{status}"
    );
}
