//! Bad input gets a clear error and a non-zero exit, and loses nothing already stored.

use std::fs;
use std::time::Duration;

use crate::support::*;

#[test]
fn failing_command_exits_non_zero_and_writes_no_snapshot() {
    let f = Fixture::new();
    let out = f.run(&["backup", "--command", "false", "--stdin-name", "db.sql"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("command `false` failed: exit status 1"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("no snapshot was written"));
    // Output then death by a signal is a failure too, however much was read.
    let out = f.run(&[
        "backup",
        "--command",
        "head -c 100000 /dev/zero; kill -9 $$",
        "--stdin-name",
        "db.sql",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("killed by signal 9"),
        "{}",
        stderr(&out)
    );
    assert!(f.snapshot_ids().is_empty());
    assert!(
        fs::read_dir(f.repo().join("snapshots"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn wrong_password_exits_12_and_says_so() {
    let f = Fixture::new();
    let out = f
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "not it")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

#[test]
fn missing_repository_exits_10_and_missing_password_is_explained() {
    let f = Fixture::empty();
    let out = f.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(
        stderr(&out).contains("no cairn repository"),
        "{}",
        stderr(&out)
    );
    let f = Fixture::new();
    let out = f
        .cmd(&["snapshots"])
        .env_remove("CAIRN_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no password"), "{}", stderr(&out));
    // init refuses a repository that exists.
    let out = f.run(&["init"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn flipped_byte_in_pack_fails_restore_of_that_file_by_name() {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    let victim = pseudo_data(200_000, 5);
    fs::write(src.join("victim.dat"), &victim).unwrap();
    let id = f.backup(&[src.to_str().unwrap()]);
    let packs = files_below(&f.repo().join("packs"));
    assert_eq!(packs.len(), 1);
    // The first blob of the pack is the file's only chunk (trees are written after data).
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[48 + 1000] ^= 0x01;
    fs::write(&packs[0], &bytes).unwrap();
    let target = f.path("out");
    let out = f.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("src/victim.dat"),
        "error does not name the file: {err}"
    );
    assert!(err.contains("damaged"), "{err}");
    // No wrong bytes anywhere under the target: the file is absent, and no temporary is left.
    let left = files_below(&target);
    assert!(left.is_empty(), "files left behind: {left:?}");
    let dump = f.run(&["dump", &id, "src/victim.dat"]);
    assert!(!dump.status.success());
    assert!(
        dump.stdout.len() < victim.len(),
        "dump wrote the damaged chunk"
    );
}

#[test]
fn backup_killed_mid_run_leaves_earlier_snapshots_whole_and_next_backup_works() {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("keep"), pseudo_data(1_000_000, 1)).unwrap();
    let first = f.backup(&[src.to_str().unwrap()]);
    fs::write(src.join("big"), pseudo_data(96 << 20, 2)).unwrap();
    for delay_ms in [30, 120, 300, 700, 1500] {
        let mut child = f
            .cmd(&["backup", src.to_str().unwrap(), "--quiet"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let t = f.path(&format!("after-kill-{delay_ms}"));
        assert_ok(&f.run(&["restore", &first, "--target", t.to_str().unwrap()]));
        assert_eq!(
            fs::read(t.join("src/keep")).unwrap(),
            pseudo_data(1_000_000, 1)
        );
    }
    let ids_before = f.snapshot_ids();
    let last = f.backup(&[src.to_str().unwrap()]);
    assert_eq!(f.snapshot_ids().len(), ids_before.len() + 1);
    let t = f.path("final");
    assert_ok(&f.run(&["restore", &last, "--target", t.to_str().unwrap()]));
    assert_eq!(
        fs::read(t.join("src/big")).unwrap(),
        pseudo_data(96 << 20, 2)
    );
    // Nothing half-written is left behind as a pack.
    for p in files_below(&f.repo().join("packs")) {
        assert!(
            !p.file_name().unwrap().to_string_lossy().starts_with(".tmp"),
            "{}",
            p.display()
        );
    }
}

#[test]
fn no_plaintext_name_content_or_label_in_the_repository() {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(src.join("Confidential-Directory-Qx7")).unwrap();
    let content = b"Patient record 4711: Jane Q. Public, diagnosis FLUORESCENT-TURNIP\n".repeat(3);
    fs::write(
        src.join("Confidential-Directory-Qx7/customer-list-Zk3.csv"),
        &content,
    )
    .unwrap();
    f.backup(&[
        src.to_str().unwrap(),
        "--service",
        "secret-service-Wq9",
        "--revision",
        "rev-Xy5-4b1d",
        "--tag",
        "tag-Vz8",
    ]);
    // The stream too.
    let out = f.run(&[
        "backup",
        "--command",
        "echo INSERT INTO patients VALUES FLUORESCENT-TURNIP",
        "--stdin-name",
        "dump-name-Jj2.sql",
        "--service",
        "secret-service-Wq9",
        "--revision",
        "rev-Xy5-4b1d",
    ]);
    assert_ok(&out);
    let needles: [&[u8]; 8] = [
        b"Confidential-Directory-Qx7",
        b"customer-list-Zk3",
        b"FLUORESCENT-TURNIP",
        b"Patient record",
        b"secret-service-Wq9",
        b"rev-Xy5-4b1d",
        b"tag-Vz8",
        b"dump-name-Jj2",
    ];
    let files = files_below(&f.repo());
    assert!(
        files.iter().any(|p| p.starts_with(f.repo().join("index"))),
        "the index is searched too"
    );
    for p in files {
        let data = fs::read(&p).unwrap();
        for n in needles {
            assert!(
                !data.windows(n.len()).any(|w| w == n),
                "{} holds {:?} in plaintext",
                p.display(),
                String::from_utf8_lossy(n)
            );
        }
    }
}

#[test]
fn a_full_disk_fails_the_backup_clearly_and_the_repository_stays_whole() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let f = Fixture::empty();
    let mnt = f.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let mount = |opts: &str| {
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs", mnt.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success(), "mount {opts}");
    };
    mount("size=12m");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.clone());
    let repo = mnt.join("repo");
    let run = |args: &[&str]| f.cmd(args).env("CAIRN_REPO", &repo).output().unwrap();
    assert_ok(&run(&[
        "init",
        "--kdf-memory",
        "8192",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "1",
    ]));
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("small.bin"), pseudo_data(1_000_000, 1)).unwrap();
    let out = run(&["backup", src.to_str().unwrap(), "--json"]);
    assert_ok(&out);
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = first["id"].as_str().unwrap().to_string();
    // Random data does not compress: 30 MB cannot fit in what is left of 12 MiB.
    let mut big = vec![0u8; 30_000_000];
    blake3::Hasher::new()
        .update(b"big")
        .finalize_xof()
        .fill(&mut big);
    fs::write(src.join("big.bin"), &big).unwrap();
    let out = run(&["backup", src.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no space left"), "{}", stderr(&out));
    // Still whole: one snapshot, it checks and restores.
    let out = run(&["snapshots", "--json"]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    assert_ok(&run(&["check", "--read-data"]));
    let t = f.path("t");
    assert_ok(&run(&["restore", &first, "--target", t.to_str().unwrap()]));
    assert_eq!(
        fs::read(t.join("src/small.bin")).unwrap(),
        pseudo_data(1_000_000, 1)
    );
    // Space freed: the next backup succeeds.
    mount("remount,size=128m");
    let out = run(&["backup", src.to_str().unwrap()]);
    assert_ok(&out);
    assert_ok(&run(&["check", "--read-data"]));
}

#[test]
fn two_backups_at_once_into_one_repository_both_succeed() {
    let f = Fixture::new();
    let (a, b) = (f.path("a"), f.path("b"));
    for (d, seed) in [(&a, 1u64), (&b, 2)] {
        fs::create_dir_all(d).unwrap();
        for i in 0..6 {
            fs::write(
                d.join(format!("{i}.bin")),
                pseudo_data(2_000_000, seed * 100 + i),
            )
            .unwrap();
        }
        // Shared content, so both deduplicate against what the other may be writing.
        fs::write(d.join("shared.bin"), pseudo_data(3_000_000, 7)).unwrap();
    }
    let spawn = |d: &std::path::Path| {
        f.cmd(&["backup", d.to_str().unwrap(), "--json"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert_ok(&oa);
    assert_ok(&ob);
    assert_eq!(f.snapshot_ids().len(), 2);
    assert_ok(&f.run(&["check", "--read-data"]));
    for (out, d, seed) in [(&oa, "a", 1u64), (&ob, "b", 2)] {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = f.path(&format!("t-{d}"));
        assert_ok(&f.run(&[
            "restore",
            v["id"].as_str().unwrap(),
            "--target",
            t.to_str().unwrap(),
        ]));
        for i in 0..6 {
            assert_eq!(
                fs::read(t.join(format!("{d}/{i}.bin"))).unwrap(),
                pseudo_data(2_000_000, seed * 100 + i)
            );
        }
        assert_eq!(
            fs::read(t.join(format!("{d}/shared.bin"))).unwrap(),
            pseudo_data(3_000_000, 7)
        );
    }
}

#[test]
fn a_stale_lock_from_a_killed_process_is_cleared_without_an_operator() {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("x"), pseudo_data(64 << 20, 3)).unwrap();
    // Kill a backup once it holds its lock, so the lock file stays behind.
    let mut child = f
        .cmd(&["backup", src.to_str().unwrap(), "--quiet"])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fs::read_dir(f.repo().join("locks"))
        .unwrap()
        .next()
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never took its lock"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let locks: Vec<_> = fs::read_dir(f.repo().join("locks")).unwrap().collect();
    assert_eq!(locks.len(), 1, "the killed backup's lock is left behind");
    // index rebuild takes an exclusive lock: it must see the holder is dead and go ahead.
    let out = f.run(&["index", "rebuild"]);
    assert_ok(&out);
    assert!(
        fs::read_dir(f.repo().join("locks"))
            .unwrap()
            .next()
            .is_none(),
        "the stale lock was not cleared"
    );
}

#[test]
fn a_transition_says_when_the_newest_state_of_its_target_is_gone() {
    let f = Fixture::new();
    let live = f.path("live");
    fs::create_dir_all(&live).unwrap();
    let config = f.tree_service("live", &live);
    let state = |args: &[&str]| f.state(&config, args);
    // r1's state twice (the second one newest), then on to r2.
    fs::write(live.join("data"), "r1, first").unwrap();
    assert_ok(&state(&["dump", "app", "--revision", "r1"]));
    fs::write(live.join("data"), "r1, second").unwrap();
    assert_ok(&state(&["transition", "app", "--from", "r1", "--to", "r2"]));
    fs::write(live.join("data"), "r2").unwrap();
    // The newest state of r1 is lost (here forgotten; a repair that sets a damaged snapshot
    // aside does the same).
    let out = f.run(&["forget", "app@r1"]);
    assert_ok(&out);
    let out = state(&["transition", "app", "--to", "r1"]);
    assert_ok(&out);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        said.contains("the newest state saved for app@r1") && said.contains("older snapshot"),
        "{said}"
    );
    assert_eq!(fs::read_to_string(live.join("data")).unwrap(), "r1, first");
    // The same once nothing of r1 is left: the current state stays, and the tool says why.
    assert_ok(&state(&["transition", "app", "--to", "r2"]));
    let out = f.run(&["forget", "app@r1"]);
    assert_ok(&out);
    let out = f.run(&["forget", "app@r1"]);
    assert_ok(&out);
    let out = state(&["transition", "app", "--to", "r1"]);
    assert_ok(&out);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("no state of it is left"), "{said}");
}

#[test]
fn every_command_takes_the_repository_from_the_service_file() {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), "hello").unwrap();
    let id = f.backup(&[src.to_str().unwrap()]);
    let config = f.path("cairn.toml");
    fs::write(
        &config,
        format!("repository = \"{}\"\n", f.repo().display()),
    )
    .unwrap();
    let without_repo = |args: &[&str]| {
        let mut c = f.cmd(args);
        c.env_remove("CAIRN_REPO").env("CAIRN_CONFIG", &config);
        c.output().unwrap()
    };
    let out = without_repo(&["snapshots"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id[..8]));
    // Commands that read, audit and change the repository alike.
    for args in [
        &["stats"][..],
        &["check", "--read-data"],
        &["ls", &id[..8]],
        &["forget", &id[..8], "--dry-run"],
    ] {
        let out = without_repo(args);
        assert_ok(&out);
    }
    // --repo still wins over the file.
    let out = without_repo(&["--repo", f.path("nowhere").to_str().unwrap(), "snapshots"]);
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    // Neither: the error says all three ways.
    let mut c = f.cmd(&["snapshots"]);
    let out = c
        .env_remove("CAIRN_REPO")
        .env_remove("CAIRN_CONFIG")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("service file"), "{}", stderr(&out));
}

/// Two snapshots of `app@r1`, of `src/a` holding `pseudo_data(300_000, 1)` then `(.., 2)`;
/// returns the newer one's id.
fn two_snapshots_of_one_revision(f: &Fixture) -> String {
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    let args = [
        src.to_str().unwrap(),
        "--service",
        "app",
        "--revision",
        "r1",
    ];
    fs::write(src.join("a"), pseudo_data(300_000, 1)).unwrap();
    f.backup(&args);
    fs::write(src.join("a"), pseudo_data(300_000, 2)).unwrap();
    f.backup(&args)
}

#[test]
fn a_snapshot_its_backup_did_not_live_to_index_is_found_by_revision() {
    let f = Fixture::new();
    let newer = two_snapshots_of_one_revision(&f);
    // As a backup killed between writing its snapshot file and indexing it leaves it.
    {
        let index = cairn_store::index::Index::open(&f.repo().join("index")).unwrap();
        let id = cairn_store::id::SnapshotId::from_hex(&newer).unwrap();
        index.remove_snapshot(&id).unwrap();
        assert!(!index.has_snapshot(&id).unwrap());
    }
    // Reads (which leave the index alone) find it, as the newest of its revision.
    for (spec, want) in [("app@r1", 2), ("app@r1~1", 1)] {
        let out = f.run(&["dump", spec, "src/a"]);
        assert_ok(&out);
        assert!(out.stdout == pseudo_data(300_000, want), "{spec}");
    }
    let t = f.path("t");
    assert_ok(&f.run(&["restore", "app@r1", "--target", t.to_str().unwrap()]));
    assert_eq!(fs::read(t.join("src/a")).unwrap(), pseudo_data(300_000, 2));
}

#[test]
fn a_snapshot_whose_file_is_gone_is_not_picked_by_revision() {
    let f = Fixture::new();
    let newer = two_snapshots_of_one_revision(&f);
    // As a `forget` killed between deleting the file and the index entry leaves it.
    fs::remove_file(f.repo().join("snapshots").join(&newer)).unwrap();
    let out = f.run(&["dump", "app@r1", "src/a"]);
    assert_ok(&out);
    assert!(
        out.stdout == pseudo_data(300_000, 1),
        "not the remaining snapshot"
    );
    let out = f.run(&["dump", "app@r1~1", "src/a"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has 1 snapshot(s)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn output_piped_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let f = Fixture::new();
    let d = f.path("many");
    fs::create_dir_all(&d).unwrap();
    // More listing than a pipe holds (64 KiB), so `ls` surely meets the closed pipe (it said
    // "cairn: Broken pipe" and exited 1). `snapshots` and `stats` print less: they meet it
    // only when the reader closes first (`stats` panicked then).
    for i in 0..2000 {
        fs::write(d.join(format!("file-with-a-long-name-{i:05}.txt")), b"x").unwrap();
    }
    let id = f.backup(&[d.to_str().unwrap()]);
    for _ in 0..3 {
        f.backup(&[d.to_str().unwrap()]);
    }
    for args in [vec!["ls", id.as_str()], vec!["snapshots"], vec!["stats"]] {
        let mut child = f
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} printed nothing");
        // The reader goes away after one line, as `head -1` does.
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        assert!(
            out.status.success(),
            "{args:?} exited {:?}: {err}",
            out.status
        );
    }
}
