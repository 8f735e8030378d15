//! Source layers built from real trees on disk, read back with the tar crate
//! and GNU tar.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use broker_oci::{
    BuildLayerError, Digest, LayerMapping, LayerOptions, ParentDir, SourceDateEpoch, Store,
    build_layer, write_layer,
};

/// One entry as read back: (path, type byte, uid, gid, mode, size, link).
type Row = (String, u8, u64, u64, u32, u64, String);

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

/// A small tree with nested dirs, an executable, a symlink and a hard link.
fn sample_tree(root: &Path, reverse: bool) {
    let mut files = vec![
        ("app/main.py", &b"print('hi')\n"[..]),
        ("app/pkg/__init__.py", b""),
        ("app/pkg/mod.py", b"X = 1\n"),
        ("bin/run", b"#!/bin/sh\nexec python3 app/main.py\n"),
        ("README.md", b"# broker\n"),
        ("www/index.html", b"<html></html>\n"),
    ];
    if reverse {
        files.reverse();
    }
    for (rel, c) in files {
        write(root, rel, c);
    }
    fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o700)).unwrap();
    symlink("../app/main.py", root.join("bin/main.py")).unwrap();
    fs::hard_link(root.join("README.md"), root.join("www/README.md")).unwrap();
    // Excluded by default.
    write(root, ".git/HEAD", b"ref: refs/heads/main\n");
    write(root, "app/__pycache__/main.cpython-311.pyc", b"\0\0");
    write(root, "app/.main.py.swp", b"swap");
}

fn mapping(source: &Path) -> LayerMapping {
    let mut m = LayerMapping::new(source, "/home/broker/app");
    m.uid = 1000;
    m.gid = 1000;
    m.parents = vec![ParentDir {
        path: "/home/broker".into(),
        uid: 1000,
        gid: 1000,
        mode: 0o750,
    }];
    m
}

fn digest_of(m: &LayerMapping) -> (Digest, Digest) {
    let (_, c) = write_layer(m, std::io::sink(), 2).unwrap();
    (c.digest, c.diff_id)
}

fn rows(gz: &[u8]) -> Vec<Row> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut tar)
        .unwrap();
    let mut a = tar::Archive::new(&tar[..]);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                String::from_utf8(e.path_bytes().to_vec()).unwrap(),
                h.entry_type().as_byte(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap(),
                h.size().unwrap(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn store() -> (tempfile::TempDir, Store) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(&t.path().join("store")).unwrap();
    (t, s)
}

/// Blobs and partial files in the store, to prove an error left nothing.
fn store_files(s: &Store) -> usize {
    fs::read_dir(s.dir().join("blobs/sha256")).unwrap().count()
        + fs::read_dir(s.dir().join("tmp")).unwrap().count()
}

#[test]
fn entries_are_sorted_normalised_and_owned_by_the_mapping() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let (gz, _) = write_layer(&mapping(t.path()), Vec::new(), 1).unwrap();
    let rows = rows(&gz);
    let paths: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            "home/",
            "home/broker/",
            "home/broker/app/",
            "home/broker/app/README.md",
            "home/broker/app/app/",
            "home/broker/app/app/main.py",
            "home/broker/app/app/pkg/",
            "home/broker/app/app/pkg/__init__.py",
            "home/broker/app/app/pkg/mod.py",
            "home/broker/app/bin/",
            "home/broker/app/bin/main.py",
            "home/broker/app/bin/run",
            "home/broker/app/www/",
            "home/broker/app/www/README.md",
            "home/broker/app/www/index.html",
        ]
    );
    let by = |p: &str| rows.iter().find(|r| r.0 == p).unwrap().clone();
    // Above the parents the caller listed: root 0755.
    let home = by("home/");
    assert_eq!((home.1, home.2, home.3, home.4), (b'5', 0, 0, 0o755));
    // The listed parent keeps the base's owner and mode.
    assert_eq!((by("home/broker/").2, by("home/broker/").4), (1000, 0o750));
    assert_eq!(
        (by("home/broker/app/").2, by("home/broker/app/").4),
        (1000, 0o755)
    );
    assert_eq!(by("home/broker/app/bin/run").4, 0o755);
    assert_eq!(by("home/broker/app/app/main.py").4, 0o644);
    let link = by("home/broker/app/bin/main.py");
    assert_eq!((link.1, link.6.as_str()), (b'2', "../app/main.py"));
    let hard = by("home/broker/app/www/README.md");
    assert_eq!(
        (hard.1, hard.6.as_str()),
        (b'1', "home/broker/app/README.md")
    );
    assert!(rows.iter().all(|r| r.2 == 1000 || r.0 == "home/"));
}

#[test]
fn same_digest_for_other_paths_touch_order_and_umask() {
    // A real git repository, cloned twice: at two paths, one with umask 077.
    let t = tempfile::tempdir().unwrap();
    let origin = t.path().join("origin");
    fs::create_dir(&origin).unwrap();
    sample_tree(&origin, false);
    fs::remove_dir_all(origin.join(".git")).unwrap();
    fs::remove_file(origin.join("www/README.md")).unwrap(); // git stores no hard links
    let git = |dir: &Path, args: &[&str]| {
        let ok = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&origin, &["init", "-q"]);
    git(&origin, &["add", "-A"]);
    git(&origin, &["commit", "-qm", "x"]);
    let a = t.path().join("checkout-a");
    let b = t.path().join("some/other/place/checkout-b");
    fs::create_dir_all(b.parent().unwrap()).unwrap();
    let clone = |umask: &str, dest: &Path| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && git clone -q \"$0\" \"$1\""))
            .arg(&origin)
            .arg(dest)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    clone("022", &a);
    clone("077", &b);
    assert_eq!(
        fs::metadata(b.join("app/main.py"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let reference = digest_of(&mapping(&a));
    assert_eq!(digest_of(&mapping(&b)), reference, "other path and umask");

    // touch every file (and directory) of b.
    let ok = Command::new("sh")
        .arg("-c")
        .arg("sleep 1.1; find \"$0\" -exec touch {} +")
        .arg(&b)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(digest_of(&mapping(&b)), reference, "after touch");

    // The same files created in the opposite order.
    let c = t.path().join("checkout-c");
    fs::create_dir(&c).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let list = Command::new("git")
        .args(["ls-files"])
        .current_dir(&a)
        .output()
        .unwrap();
    for l in String::from_utf8(list.stdout).unwrap().lines().rev() {
        files.push(PathBuf::from(l));
    }
    for rel in &files {
        let src = a.join(rel);
        let dst = c.join(rel);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let meta = fs::symlink_metadata(&src).unwrap();
        if meta.file_type().is_symlink() {
            symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
    assert_eq!(digest_of(&mapping(&c)), reference, "other creation order");

    // A content change does change it.
    write(&c, "app/main.py", b"print('changed')\n");
    assert_ne!(digest_of(&mapping(&c)), reference);
}

#[test]
fn epoch_and_owner_change_the_digest_and_threads_do_not() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    // Enough content for a dozen gzip chunks; this pattern is the one that
    // caught a zlib-rs compressor reused after `reset` giving other bytes.
    let big: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    write(t.path(), "data/big.bin", &big);
    let m = mapping(t.path());
    let one = write_layer(&m, Vec::new(), 1).unwrap();
    for threads in [2, 4] {
        let many = write_layer(&m, Vec::new(), threads).unwrap();
        assert_eq!(
            one.1.diff_id, many.1.diff_id,
            "{threads} threads: tar differs"
        );
        assert!(one.0 == many.0, "{threads} threads");
    }
    let mut later = m.clone();
    later.epoch = SourceDateEpoch::new(1_700_000_000);
    assert_ne!(digest_of(&later), (one.1.digest, one.1.diff_id));
    let mut root = m.clone();
    root.uid = 0;
    assert_ne!(digest_of(&root), (one.1.digest, one.1.diff_id));
}

#[test]
fn gnu_tar_lists_the_layer() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let long_dir = "node_modules/".to_owned() + &"a-rather-long-package-name/".repeat(11);
    write(
        t.path(),
        &format!("{long_dir}index.js"),
        b"module.exports = 1;\n",
    );
    write(t.path(), "www/grüße.txt", b"hallo\n");
    let (_s, store) = store();
    let layer = build_layer(&store, &mapping(t.path()), &LayerOptions::default()).unwrap();
    assert!(layer.target == "/home/broker/app" && !layer.from_cache);
    let out = broker_test_support::output_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-tvzf"])
            .arg(store.blob_path(&layer.digest)),
    );
    // Compare with runs of spaces collapsed: GNU tar pads columns.
    let squash = |s: &str| {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let listing = squash(&String::from_utf8(out.stdout).unwrap());
    let long_path = format!("home/broker/app/{long_dir}index.js");
    assert!(long_path.len() > 300);
    for expected in [
        "drwxr-xr-x 0/0",
        "drwxr-x--- 1000/1000",
        "-rwxr-xr-x 1000/1000          35 1980-01-01 00:00 home/broker/app/bin/run",
        "lrwxrwxrwx 1000/1000           0 1980-01-01 00:00 home/broker/app/bin/main.py -> ../app/main.py",
        "hrw-r--r-- 1000/1000           0 1980-01-01 00:00 home/broker/app/www/README.md link to home/broker/app/README.md",
        "home/broker/app/www/grüße.txt",
        &long_path,
    ] {
        let expected = squash(expected);
        assert!(
            listing.contains(&expected),
            "missing {expected:?} in\n{listing}"
        );
    }
    assert!(
        !listing.contains(".git") && !listing.contains("__pycache__") && !listing.contains(".swp")
    );
    // The file contents survive GNU tar's extraction.
    let x = tempfile::tempdir().unwrap();
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(store.blob_path(&layer.digest))
        .arg("-C")
        .arg(x.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(
        fs::read(x.path().join(&long_path)).unwrap(),
        b"module.exports = 1;\n"
    );
}

#[test]
fn rebuilding_an_unchanged_tree_hits_the_cache() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let (_s, store) = store();
    let opts = LayerOptions::default();
    let first = build_layer(&store, &mapping(t.path()), &opts).unwrap();
    assert!(!first.from_cache);
    let again = build_layer(&store, &mapping(t.path()), &opts).unwrap();
    assert!(again.from_cache);
    assert_eq!(
        (again.digest, again.diff_id, again.size),
        (first.digest, first.diff_id, first.size)
    );

    // Touch forces a re-hash, but the key and so the layer stay.
    let ok = Command::new("sh")
        .arg("-c")
        .arg("find \"$0\" -type f -exec touch {} +")
        .arg(t.path())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let touched = build_layer(&store, &mapping(t.path()), &opts).unwrap();
    assert!(touched.from_cache && touched.digest == first.digest);

    // Another checkout of the same tree shares the cache entry.
    let t2 = tempfile::tempdir().unwrap();
    sample_tree(t2.path(), true);
    assert!(
        build_layer(&store, &mapping(t2.path()), &opts)
            .unwrap()
            .from_cache
    );

    // A changed file is a miss with a new digest.
    write(t.path(), "app/main.py", b"print('bye')\n");
    let changed = build_layer(&store, &mapping(t.path()), &opts).unwrap();
    assert!(!changed.from_cache && changed.digest != first.digest);

    // A missing blob is rebuilt, not trusted.
    fs::remove_file(store.blob_path(&first.digest)).unwrap();
    let rebuilt = build_layer(&store, &mapping(t2.path()), &opts).unwrap();
    assert!(!rebuilt.from_cache && rebuilt.digest == first.digest);
    assert!(store.has_blob(&first.digest));
}

/// Build a layer that must fail; check the message names `needle` and that
/// the store gained no file.
fn expect_error(root: &Path, m: &LayerMapping, needle: &str) -> BuildLayerError {
    let (_s, store) = store();
    for use_cache in [true, false] {
        let opts = LayerOptions {
            threads: 2,
            use_cache,
        };
        let e = build_layer(&store, m, &opts).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{msg:?} does not name {needle:?}");
        assert!(!msg.contains('\n'), "{msg:?} is not one line");
        assert_eq!(store_files(&store), 0, "{root:?}: a blob was left behind");
    }
    build_layer(&store, m, &LayerOptions::default()).unwrap_err()
}

#[test]
fn a_symlink_escaping_the_tree_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    symlink("../../etc/passwd", t.path().join("app/evil")).unwrap();
    let e = expect_error(t.path(), &mapping(t.path()), "app/evil");
    assert!(matches!(e, BuildLayerError::SymlinkEscapes { .. }));
    fs::remove_file(t.path().join("app/evil")).unwrap();
    symlink("/etc/passwd", t.path().join("app/abs")).unwrap();
    expect_error(t.path(), &mapping(t.path()), "app/abs");
}

#[test]
fn a_fifo_is_an_error_unless_excluded() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let ok = Command::new("mkfifo")
        .arg(t.path().join("app/pipe"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let e = expect_error(t.path(), &mapping(t.path()), "app/pipe");
    assert!(e.to_string().contains("fifo"));
    let mut m = mapping(t.path());
    m.excludes = vec!["app/pipe".into()];
    digest_of(&m);
}

#[test]
fn secret_looking_files_are_refused_unless_named() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    write(t.path(), "config/.env", b"PASSWORD=hunter2\n");
    let e = expect_error(t.path(), &mapping(t.path()), "config/.env");
    assert!(matches!(e, BuildLayerError::SecretRefused { .. }));

    let mut excluded = mapping(t.path());
    excluded.excludes = vec!["**/.env".into()];
    digest_of(&excluded);

    // A wildcard include is not explicit enough ...
    let mut wild = mapping(t.path());
    wild.includes = vec!["**".into()];
    expect_error(t.path(), &wild, "config/.env");
    // ... naming the file is.
    let mut named = mapping(t.path());
    named.includes = vec!["app".into(), "config/.env".into()];
    let (gz, _) = write_layer(&named, Vec::new(), 1).unwrap();
    let paths: Vec<String> = rows(&gz).into_iter().map(|r| r.0).collect();
    assert!(paths.contains(&"home/broker/app/config/.env".to_owned()));
    assert!(paths.contains(&"home/broker/app/app/main.py".to_owned()));
    assert!(!paths.iter().any(|p| p.contains("www")), "{paths:?}");

    for name in ["server.pem", "tls.key", "id_rsa", ".env.production"] {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), &format!("sub/{name}"), b"secret");
        expect_error(t.path(), &mapping(t.path()), name);
    }
}

#[test]
fn an_unreadable_file_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let locked = t.path().join("app/locked.py");
    fs::write(&locked, b"x").unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&locked).is_ok() {
        // Root reads anything: run this test again without the capabilities
        // that allow it, if setpriv is there to drop them.
        if std::env::var_os("BROKER_OCI_NO_DAC").is_some() {
            panic!("still able to read a mode-000 file without DAC capabilities");
        }
        let exe = std::env::current_exe().unwrap();
        let status = Command::new("setpriv")
            .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
            .arg(exe)
            .args(["--exact", "an_unreadable_file_is_an_error", "--nocapture"])
            .env("BROKER_OCI_NO_DAC", "1")
            .status();
        match status {
            Ok(s) => assert!(s.success(), "the test failed without DAC capabilities"),
            Err(e) => {
                eprintln!("skipped: root can read mode-000 files and setpriv is missing: {e}")
            }
        }
        return;
    }
    let e = expect_error(t.path(), &mapping(t.path()), "app/locked.py");
    assert!(matches!(e, BuildLayerError::Unreadable { .. }), "{e}");
}

#[test]
fn a_300_byte_path_works() {
    let t = tempfile::tempdir().unwrap();
    let rel = format!("{}/f.txt", vec!["x".repeat(60); 5].join("/"));
    assert!(rel.len() >= 300);
    write(t.path(), &rel, b"deep\n");
    let (_s, store) = store();
    let layer = build_layer(&store, &mapping(t.path()), &LayerOptions::default()).unwrap();
    let gz = fs::read(store.blob_path(&layer.digest)).unwrap();
    let rows = rows(&gz);
    assert!(
        rows.iter()
            .any(|r| r.0 == format!("home/broker/app/{rel}") && r.5 == 5)
    );
}

#[test]
fn a_non_utf8_name_is_a_clear_error() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let name = OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(t.path().join("app").join(name), b"x").unwrap();
    let e = expect_error(t.path(), &mapping(t.path()), "app/caf");
    assert!(matches!(e, BuildLayerError::NonUtf8Name { .. }));
    assert!(e.to_string().contains("UTF-8"));
    // Issue 20: the name as its bytes are, escaped, not with U+FFFD.
    assert!(e.to_string().contains("app/caf\\xe9.txt"), "{e}");
    assert!(!e.to_string().contains('\u{fffd}'), "{e}");
}

#[test]
fn mapping_errors_name_the_path() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    let mut m = mapping(t.path());
    m.target = "relative/app".into();
    expect_error(t.path(), &m, "relative/app");
    let mut m = mapping(t.path());
    m.parents[0].path = "/srv".into();
    expect_error(t.path(), &m, "/srv");
    let m = mapping(&t.path().join("missing"));
    expect_error(t.path(), &m, "missing");
}

#[test]
fn dockerignore_excludes_and_re_includes() {
    let t = tempfile::tempdir().unwrap();
    sample_tree(t.path(), false);
    write(t.path(), "logs/a.log", b"a");
    write(t.path(), "logs/keep.log", b"k");
    let mut m = mapping(t.path());
    m.excludes = broker_oci::exclude::parse_dockerignore("# ignore\nlogs\n!logs/keep.log\nwww\n");
    let (gz, _) = write_layer(&m, Vec::new(), 1).unwrap();
    let paths: Vec<String> = rows(&gz).into_iter().map(|r| r.0).collect();
    assert!(paths.contains(&"home/broker/app/logs/".to_owned()));
    assert!(paths.contains(&"home/broker/app/logs/keep.log".to_owned()));
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with("a.log") || p.contains("www")),
        "{paths:?}"
    );
}
