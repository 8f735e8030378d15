//! The postgres and rabbitmq stand-ins keep the official images' contract
//! (see `standins/README.md`): what the catalogue's db and mq workloads
//! and operators rely on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use broker_test_support::{docker_cli, standins, unique_suffix};

/// A container removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_cli().args(["rm", "--force", &self.0]).output();
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn exec(id: &str, args: &[&str]) -> Output {
    output(docker_cli().args(["exec", id]).args(args))
}

fn wait_for(id: &str, args: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !exec(id, args).status.success() {
        if Instant::now() > deadline {
            let logs = output(docker_cli().args(["logs", "--tail", "40", id]));
            panic!(
                "{what} within 120 s; logs:\n{}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A fresh directory as a node makes it: root:root 0755.
fn node_directory() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn uid_of_pid_1(id: &str) -> String {
    ok(&exec(id, &["awk", "/^Uid:/ {print $2}", "/proc/1/status"]))
}

#[test]
fn postgres_standin_initialises_once_and_serves_as_the_official_image_does() {
    let image = standins::postgres();
    let data = node_directory();
    let init = node_directory();
    std::fs::write(
        init.path().join("01-schema.sql"),
        "CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept');\n",
    )
    .unwrap();
    // Sourced by the entrypoint: counts how often the init scripts run.
    std::fs::write(
        init.path().join("02-count.sh"),
        "echo ran >> \"$PGDATA/init-runs\"\n",
    )
    .unwrap();
    for f in ["01-schema.sql", "02-count.sh"] {
        std::fs::set_permissions(init.path().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let password = "pa ss\"word'1";
    let run = |extra: &[&str]| {
        let mut cmd = docker_cli();
        cmd.args(["run", "--detach", "--name"])
            .arg(format!("standin-pg-{}", unique_suffix()))
            .args(["--env", "POSTGRES_USER=owner", "--env", "POSTGRES_DB=app"])
            .args(["--env", "PGDATA=/var/lib/postgresql/data/pgdata"])
            // Clients of the init-time server must not follow it.
            .args(["--env", "PGHOST=db"])
            .args(extra)
            .arg("--mount")
            .arg(format!(
                "type=bind,source={},target=/var/lib/postgresql/data",
                data.path().display()
            ))
            .arg("--mount")
            .arg(format!(
                "type=bind,source={},target=/docker-entrypoint-initdb.d,readonly",
                init.path().display()
            ))
            .arg(&image.docker_ref);
        Container(ok(&output(&mut cmd)))
    };

    // Without a password an empty data directory is refused.
    let refused = run(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok(&output(docker_cli().args([
        "inspect",
        "-f",
        "{{.State.Running}}",
        &refused.0,
    ]))) == "true"
    {
        assert!(Instant::now() < deadline, "no password, still running");
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = output(docker_cli().args(["logs", &refused.0]));
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("POSTGRES_PASSWORD is not set"),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    drop(refused);

    let env = format!("POSTGRES_PASSWORD={password}");
    let db = run(&["--env", &env]);
    wait_for(
        &db.0,
        &["pg_isready", "--quiet", "--host=127.0.0.1", "--port=5432"],
        "postgres did not listen on 127.0.0.1:5432",
    );
    let query = |sql: &str| {
        ok(&exec(
            &db.0,
            &[
                "psql",
                "-h",
                "/var/run/postgresql",
                "-U",
                "owner",
                "-d",
                "app",
                "-tAc",
                sql,
            ],
        ))
    };
    assert_eq!(query("select body from notes"), "kept");
    assert_eq!(uid_of_pid_1(&db.0), "999");
    let pgdata = data.path().join("pgdata");
    let meta = std::fs::metadata(&pgdata).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (999, 0o700));

    // From another address: the password, over scram-sha-256.
    let ip = ok(&output(docker_cli().args([
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}",
        &db.0,
    ])));
    let remote = |password: Option<&str>| {
        let mut cmd = docker_cli();
        cmd.arg("exec");
        if let Some(p) = password {
            cmd.args(["--env", &format!("PGPASSWORD={p}")]);
        }
        output(cmd.args([
            &db.0, "psql", "-w", "-h", &ip, "-U", "owner", "-d", "app", "-tAc", "select 1",
        ]))
    };
    assert!(!remote(None).status.success(), "no password asked over TCP");
    assert!(
        !remote(Some("wrong")).status.success(),
        "a wrong password let in"
    );
    assert_eq!(ok(&remote(Some(password))), "1");
    let method = query("select auth_method from pg_hba_file_rules where address = 'all'");
    assert_eq!(method, "scram-sha-256");

    // A restart finds the data: the init scripts do not run again.
    ok(&output(
        docker_cli().args(["restart", "--time", "20", &db.0]),
    ));
    wait_for(
        &db.0,
        &["pg_isready", "--quiet", "--host=127.0.0.1", "--port=5432"],
        "postgres did not come back",
    );
    assert_eq!(query("select count(*) from notes"), "1");
    let runs = std::fs::read_to_string(pgdata.join("init-runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "{runs}");
}

#[test]
fn rabbitmq_standin_takes_its_user_node_name_and_plugins_as_the_official_image_does() {
    let image = standins::rabbitmq();
    let data = node_directory();
    let config = node_directory();
    let plugins = config.path().join("enabled_plugins");
    std::fs::write(&plugins, "[rabbitmq_management,rabbitmq_prometheus].\n").unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o644)).unwrap();
    let password = "p\"a\\ss word#1";
    let mut cmd = docker_cli();
    cmd.args(["run", "--detach", "--hostname", "mq", "--name"])
        .arg(format!("standin-mq-{}", unique_suffix()))
        .args(["--env", "RABBITMQ_NODENAME=rabbit@mq"])
        .args(["--env", "RABBITMQ_DEFAULT_USER=broker"])
        .arg("--env")
        .arg(format!("RABBITMQ_DEFAULT_PASS={password}"))
        .arg("--mount")
        .arg(format!(
            "type=bind,source={},target=/etc/rabbitmq/enabled_plugins,readonly",
            plugins.display()
        ))
        .arg("--mount")
        .arg(format!(
            "type=bind,source={},target=/var/lib/rabbitmq/mnesia",
            data.path().display()
        ))
        .arg(&image.docker_ref);
    let mq = Container(ok(&output(&mut cmd)));
    wait_for(
        &mq.0,
        &["rabbitmq-diagnostics", "-q", "ping"],
        "rabbitmq-diagnostics ping did not succeed",
    );
    ok(&exec(&mq.0, &["rabbitmqctl", "-q", "await_startup"]));
    ok(&exec(
        &mq.0,
        &["rabbitmqctl", "-q", "authenticate_user", "broker", password],
    ));
    let users = ok(&exec(&mq.0, &["rabbitmqctl", "-q", "list_users"]));
    assert!(
        users.contains("broker") && !users.contains("guest"),
        "{users}"
    );
    let enabled = ok(&exec(
        &mq.0,
        &["rabbitmq-plugins", "-q", "list", "--enabled", "--minimal"],
    ));
    assert_eq!(
        enabled.lines().collect::<Vec<_>>(),
        ["rabbitmq_management", "rabbitmq_prometheus"],
        "{enabled}"
    );
    let listeners = ok(&exec(&mq.0, &["rabbitmq-diagnostics", "-q", "listeners"]));
    for port in ["5672", "15672", "15692"] {
        assert!(listeners.contains(&format!("port: {port},")), "{listeners}");
    }
    assert_eq!(uid_of_pid_1(&mq.0), "999");
    assert!(Path::new(&data.path().join("rabbit@mq")).is_dir());
    assert_eq!(std::fs::metadata(data.path()).unwrap().uid(), 999);

    // The node's data is found again after a restart.
    ok(&output(
        docker_cli().args(["restart", "--time", "30", &mq.0]),
    ));
    wait_for(
        &mq.0,
        &["rabbitmqctl", "-q", "await_startup"],
        "rabbitmq did not come back",
    );
    ok(&exec(
        &mq.0,
        &["rabbitmqctl", "-q", "authenticate_user", "broker", password],
    ));
}
