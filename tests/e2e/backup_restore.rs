//! Round trips: what goes in comes out identical.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Stdio;

use crate::support::*;

fn build_every_kind(root: &std::path::Path) {
    fs::create_dir_all(root.join("dir with spaces/nested/deeper")).unwrap();
    fs::write(
        root.join("dir with spaces/file with spaces.txt"),
        b"spaces\n",
    )
    .unwrap();
    fs::write(
        root.join("dir with spaces/nested/deeper/data.bin"),
        pseudo_data(3 * 1024 * 1024 + 5, 1),
    )
    .unwrap();
    fs::write(root.join(os(b"non-utf8-\xff\xfe.txt")), b"latin-1 name\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::create_dir(root.join("empty-dir")).unwrap();
    fs::write(root.join("readonly"), b"0444\n").unwrap();
    fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("original"), b"shared by two names\n").unwrap();
    fs::hard_link(root.join("original"), root.join("dir with spaces/hardlink")).unwrap();
    symlink(
        "dir with spaces/file with spaces.txt",
        root.join("relative-link"),
    )
    .unwrap();
    symlink("/etc/passwd", root.join("absolute-link")).unwrap();
    symlink("does/not/exist", root.join("dangling-link")).unwrap();
    let fifo = std::ffi::CString::new(root.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    fs::create_dir(root.join("private-dir")).unwrap();
    fs::write(root.join("private-dir/secret"), b"x").unwrap();
    fs::set_permissions(root.join("private-dir"), fs::Permissions::from_mode(0o700)).unwrap();
    // An extended attribute where the filesystem has them (ext4, tmpfs and btrfs do).
    let c = std::ffi::CString::new(root.join("script.sh").to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and value buffer.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.cairn-test".as_ptr(),
            b"v1".as_ptr().cast(),
            2,
            0,
        )
    };
    if r == 0 {
        let got = cairn_store::fsmeta::read_xattrs(&root.join("script.sh"));
        assert_eq!(got, vec![(b"user.cairn-test".to_vec(), b"v1".to_vec())]);
    } else {
        eprintln!(
            "this filesystem has no user xattrs: {}",
            std::io::Error::last_os_error()
        );
    }
    // Fixed mtimes with nanoseconds, so a restore that drops them is caught.
    for (i, p) in files_below(root).iter().enumerate() {
        let t = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let ts = libc::timespec {
            tv_sec: 1_600_000_000 + i as i64,
            tv_nsec: 123_456_789,
        };
        // SAFETY: valid C string and timespec pair.
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                t.as_ptr(),
                [ts, ts].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
    }
}

#[test]
fn tree_with_every_kind_of_entry_restores_identical() {
    let f = Fixture::new();
    let src = f.path("src/state");
    build_every_kind(&src);
    let id = f.backup(&[
        src.to_str().unwrap(),
        "--service",
        "drupal",
        "--revision",
        "r1",
    ]);
    let target = f.path("restored");
    let out = f.run(&["restore", &id[..12], "--target", target.to_str().unwrap()]);
    assert_ok(&out);
    let want = describe(&src);
    let got = describe(&target.join("state"));
    assert_eq!(
        want.len(),
        got.len(),
        "entry count differs:\n{want:#?}\n{got:#?}"
    );
    for (k, v) in &want {
        assert_eq!(
            got.get(k),
            Some(v),
            "entry {:?}",
            String::from_utf8_lossy(k)
        );
    }
    // Also by label, and a single file with --include.
    let t2 = f.path("restored-by-label");
    assert_ok(&f.run(&[
        "restore",
        "drupal@r1",
        "--target",
        t2.to_str().unwrap(),
        "--include",
        "state/script.sh",
    ]));
    assert_eq!(
        fs::read(t2.join("state/script.sh")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert!(!t2.join("state/readonly").exists());
}

#[test]
fn dump_and_ls_show_the_stored_file() {
    let f = Fixture::new();
    let src = f.path("sites");
    fs::create_dir_all(src.join("default")).unwrap();
    fs::write(src.join("default/settings.php"), b"<?php $x = 1;\n").unwrap();
    let id = f.backup(&[src.to_str().unwrap()]);
    let out = f.run(&["dump", &id[..8], "sites/default/settings.php"]);
    assert_ok(&out);
    assert_eq!(out.stdout, b"<?php $x = 1;\n");
    let ls = f.run(&["ls", "latest"]);
    assert_ok(&ls);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(text.contains("/sites/default/settings.php"), "{text}");
    // A path not there is refused, and the message names what is there instead.
    for (path, says) in [
        (
            "sites/nope",
            "sites/nope is not in the snapshot (in sites: default)",
        ),
        ("-", "- is not in the snapshot (at its top: sites)"),
    ] {
        let missing = f.run(&["dump", "latest", path]);
        assert!(!missing.status.success());
        assert!(stderr(&missing).contains(says), "{}", stderr(&missing));
    }
}

/// Generates the 256 MiB stream in blocks, so neither side holds it whole.
fn stream_block(i: u64) -> Vec<u8> {
    pseudo_data(1 << 20, 1000 + i)
}

/// Watches a child's peak resident set (VmHWM) from a thread until it exits; join after
/// waiting for the child. (`wait4`'s ru_maxrss would count the test process's own memory,
/// which a child inherits at fork.)
fn watch_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0u64;
        loop {
            let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                return peak;
            };
            let Some(kb) = s.lines().find_map(|l| l.strip_prefix("VmHWM:")) else {
                return peak;
            };
            let kb: u64 = kb.trim().trim_end_matches("kB").trim().parse().unwrap();
            peak = peak.max(kb * 1024);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })
}

#[test]
fn stream_of_256_mib_round_trips_in_bounded_memory() {
    const MIB: u64 = 256;
    let f = Fixture::new();
    let mut child = f
        .cmd(&[
            "backup",
            "--stdin",
            "--stdin-name",
            "big.sql",
            "--service",
            "db",
            "--revision",
            "r1",
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let watch = watch_rss(child.id());
    let mut want = blake3::Hasher::new();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..MIB {
            let b = stream_block(i);
            want.update(&b);
            stdin.write_all(&b).unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "backup failed");
    let backup_rss = watch.join().unwrap();

    let mut child = f
        .cmd(&["dump", "db@r1", "big.sql"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let watch = watch_rss(child.id());
    let mut got = blake3::Hasher::new();
    let mut n = 0u64;
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
        got.update(&buf[..k]);
    }
    assert!(child.wait().unwrap().success(), "dump failed");
    let dump_rss = watch.join().unwrap();
    assert_eq!(n, MIB << 20);
    assert_eq!(
        got.finalize(),
        want.finalize(),
        "the stream came back different"
    );
    assert!(
        backup_rss > 0 && dump_rss > 0,
        "no memory figures were read"
    );
    let limit = (MIB << 20) / 2;
    assert!(
        backup_rss < limit,
        "backup peak RSS {backup_rss} bytes is not well under the stream's size"
    );
    assert!(
        dump_rss < limit,
        "dump peak RSS {dump_rss} bytes is not well under the stream's size"
    );
    eprintln!(
        "peak RSS: backup {} MiB, dump {} MiB",
        backup_rss >> 20,
        dump_rss >> 20
    );
}

#[test]
fn unchanged_tree_backed_up_again_grows_repository_under_one_percent() {
    let f = Fixture::new();
    let src = f.path("sites");
    fs::create_dir_all(src.join("files")).unwrap();
    for i in 0..200 {
        fs::write(
            src.join(format!("files/upload-{i}.bin")),
            pseudo_data(20_000 + i * 100, i as u64),
        )
        .unwrap();
    }
    fs::write(src.join("big.bin"), pseudo_data(8 << 20, 99)).unwrap();
    f.backup(&[src.to_str().unwrap()]);
    let before = du(&f.repo(), "index");
    f.backup(&[src.to_str().unwrap()]);
    let after = du(&f.repo(), "index");
    let growth = after - before;
    assert!(
        (growth as f64) < before as f64 * 0.01,
        "repository grew by {growth} bytes over {before} ({:.2}%)",
        growth as f64 * 100.0 / before as f64
    );
}

#[test]
fn index_deleted_is_rebuilt_and_every_snapshot_restores() {
    let f = Fixture::new();
    let src = f.path("data");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo_data(500_000, 1)).unwrap();
    let a = f.backup(&[
        src.to_str().unwrap(),
        "--service",
        "svc",
        "--revision",
        "r1",
    ]);
    fs::write(src.join("b"), pseudo_data(700_000, 2)).unwrap();
    let b = f.backup(&[
        src.to_str().unwrap(),
        "--service",
        "svc",
        "--revision",
        "r2",
    ]);
    fs::remove_dir_all(f.repo().join("index")).unwrap();
    let broken = f.run(&["restore", &a, "--target", f.path("x").to_str().unwrap()]);
    assert!(!broken.status.success());
    assert!(
        stderr(&broken).contains("index rebuild"),
        "{}",
        stderr(&broken)
    );
    let out = f.run(&["index", "rebuild"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 snapshots"));
    for (id, spec) in [(&a, "svc@r1"), (&b, "svc@r2")] {
        for s in [id.as_str(), spec] {
            let t = f.path(&format!("r-{s}"));
            assert_ok(&f.run(&["restore", s, "--target", t.to_str().unwrap()]));
            assert_eq!(fs::read(t.join("data/a")).unwrap(), pseudo_data(500_000, 1));
        }
    }
    assert_eq!(
        fs::read(f.path("r-svc@r2/data/b")).unwrap(),
        pseudo_data(700_000, 2)
    );
    assert!(!f.path("r-svc@r1/data/b").exists());
}

#[test]
fn labels_resolve_to_the_newest_and_tilde_goes_back() {
    let f = Fixture::new();
    let src = f.path("v");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        fs::write(src.join("n"), format!("{i}")).unwrap();
        ids.push(f.backup(&[src.to_str().unwrap(), "--service", "s", "--revision", "abc"]));
    }
    for (spec, want) in [("s@abc", "2"), ("s@abc~1", "1"), ("s@abc~2", "0")] {
        let out = f.run(&["dump", spec, "v/n"]);
        assert_ok(&out);
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{spec}");
    }
    let out = f.run(&["dump", "s@abc~3", "v/n"]);
    assert!(!out.status.success());
    let out = f.run(&["dump", "s@nope", "v/n"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no snapshot of s@nope"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn key_add_list_remove_and_passwd() {
    let f = Fixture::new();
    let out = f
        .cmd(&["key", "add"])
        .env("CAIRN_NEW_PASSWORD", "second")
        .output()
        .unwrap();
    assert_ok(&out);
    let list = f.run(&["key", "list"]);
    assert_ok(&list);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    let other = text
        .lines()
        .find(|l| !l.starts_with('*'))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // The second password opens the repository.
    assert_ok(
        &f.cmd(&["snapshots"])
            .env("CAIRN_PASSWORD", "second")
            .output()
            .unwrap(),
    );
    // The key in use cannot be removed; the other can.
    let mine = text
        .lines()
        .find(|l| l.starts_with('*'))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!f.run(&["key", "remove", &mine]).status.success());
    assert_ok(&f.run(&["key", "remove", &other]));
    assert_eq!(
        f.cmd(&["snapshots"])
            .env("CAIRN_PASSWORD", "second")
            .output()
            .unwrap()
            .status
            .code(),
        Some(12)
    );
    // passwd: the old password stops working, the new one works.
    assert_ok(
        &f.cmd(&["key", "passwd"])
            .env("CAIRN_NEW_PASSWORD", "third")
            .output()
            .unwrap(),
    );
    assert_eq!(f.run(&["snapshots"]).status.code(), Some(12));
    assert_ok(
        &f.cmd(&["snapshots"])
            .env("CAIRN_PASSWORD", "third")
            .output()
            .unwrap(),
    );
}
