//! Commands racing each other on one repository: a backup against state transitions, backups
//! against `forget --prune`, `check` against a backup and a prune; and what the repository
//! leaves readable to other users.
//!
//! The races are made to happen, not hoped for: a backup's last item is a stream whose
//! command waits for a gate file, so the backup holds its lock (its directories read, its
//! snapshot not written yet) for exactly as long as the test wants.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A file whose creation lets gated commands go on. Dropping it opens it too, so a failing
/// test never leaves a backup (and a prune waiting for that backup) blocked for ever.
struct Gate(PathBuf);

impl Gate {
    fn new(f: &Fixture, name: &str) -> Self {
        let p = f.path(name);
        let _ = fs::remove_file(&p);
        Gate(p)
    }

    fn open(&self) {
        fs::write(&self.0, b"").unwrap();
    }

    /// A shell command that creates `ready`, waits for the gate, then runs `then`.
    fn command(&self, ready: &Path, then: &str) -> String {
        format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done; {then}",
            ready.display(),
            self.0.display()
        )
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = fs::write(&self.0, b"");
    }
}

/// Starts a command with its output captured.
fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `done` until it holds; panics after 30 s or, with the reason, once `child` has
/// exited while `done` still does not hold.
#[track_caller]
fn wait_for(what: &str, child: &mut Child, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if done() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            if done() {
                return;
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("waiting for {what}: the process exited first ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lock files currently in the repository.
fn lock_count(f: &Fixture) -> usize {
    fs::read_dir(f.repo().join("locks"))
        .map(|rd| {
            rd.filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .count()
        })
        .unwrap_or(0)
}

/// Whether a prune has recorded doomed packs (and so is about to hide them, or has).
fn prune_recorded(f: &Fixture) -> bool {
    fs::read_dir(f.repo().join("prune")).is_ok_and(|mut rd| rd.next().is_some())
}

/// Every JSON object a command printed, one a line.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn snapshot_id(out: &Output) -> String {
    assert_ok(out);
    json_lines(out)[0]["id"].as_str().unwrap().to_string()
}

/// What a snapshot must hold: path inside it → its bytes.
type Expected = BTreeMap<String, Vec<u8>>;

/// Writes `files` (relative path, size, seed) of `pseudo_data` below `dir`, and returns what
/// a snapshot of `dir` stored as `name` holds.
fn write_files<S: AsRef<str>>(dir: &Path, name: &str, files: &[(S, usize, u64)]) -> Expected {
    let mut out = Expected::new();
    for (rel, size, seed) in files {
        let rel = rel.as_ref();
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = pseudo_data(*size, *seed);
        fs::write(&p, &data).unwrap();
        out.insert(format!("{name}/{rel}"), data);
    }
    out
}

/// Restores `id` whole into a fresh directory and asserts it holds exactly `want` (every
/// regular file, byte for byte, and no other file).
#[track_caller]
fn assert_restores(f: &Fixture, id: &str, want: &Expected, what: &str) {
    let t = f.path(&format!("restore-{}", &id[..12]));
    let _ = fs::remove_dir_all(&t);
    let out = f.run(&["restore", id, "--target", t.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{what}: restoring {id} failed: {}",
        stderr(&out)
    );
    let got: BTreeSet<String> = files_below(&t)
        .iter()
        .map(|p| p.strip_prefix(&t).unwrap().to_string_lossy().into_owned())
        .collect();
    let names: BTreeSet<String> = want.keys().cloned().collect();
    assert_eq!(got, names, "{what}: the files restored from {id}");
    for (rel, data) in want {
        let restored = fs::read(t.join(rel)).unwrap();
        assert!(
            restored == *data,
            "{what}: {rel} restored from {id} differs ({} bytes, {} expected)",
            restored.len(),
            data.len()
        );
    }
    fs::remove_dir_all(&t).unwrap();
}

// ---------------------------------------------------------------------------------------
// 1. A backup racing state transitions.

/// The r1 state of a `sites`-like tree, about 5 MB.
fn site_r1(sites: &Path) {
    let mut files: Vec<(String, usize, u64)> = (0..10)
        .map(|i| {
            (
                format!("default/files/upload-{i}.bin"),
                400_000 + i * 10_000,
                10 + i as u64,
            )
        })
        .collect();
    files.push(("all/modules/custom/custom.module".into(), 200_000, 50));
    files.push(("default/files/styles/thumb/a.jpg".into(), 150_000, 51));
    write_files(sites, "sites", &files);
    fs::write(
        sites.join("default/settings.php"),
        "<?php\n$settings['hash_salt'] = 'r1';\n",
    )
    .unwrap();
}

/// What an upgrade to r2 does to the tree.
fn upgrade_site(sites: &Path) {
    fs::write(
        sites.join("default/settings.php"),
        "<?php\n$settings['hash_salt'] = 'r2';\n$config['x'] = 1;\n",
    )
    .unwrap();
    fs::remove_file(sites.join("default/files/upload-3.bin")).unwrap();
    fs::remove_dir_all(sites.join("default/files/styles")).unwrap();
    fs::write(
        sites.join("default/files/upload-new.bin"),
        pseudo_data(500_000, 60),
    )
    .unwrap();
    let p = sites.join("default/files/upload-5.bin");
    let mut data = fs::read(&p).unwrap();
    data[100_000..120_000].copy_from_slice(&pseudo_data(20_000, 61));
    fs::write(&p, data).unwrap();
}

#[test]
fn backup_racing_a_state_transition_both_succeed_and_both_restore() {
    let f = Fixture::new();
    let sites = f.path("live/sites");
    site_r1(&sites);
    let config = f.tree_service("sites", &sites);
    let state = |args: &[&str]| f.state(&config, args);
    assert_ok(&state(&["dump", "app", "--revision", "r1"]));
    let r1 = describe(&sites);
    upgrade_site(&sites);
    let upgraded = describe(&sites);
    assert_ne!(r1, upgraded);

    // A plain backup of another large directory: 32 MB of files, then a stream that waits
    // for the gate, so it is still running (holding its lock, packs written, no snapshot
    // yet) through every transition below.
    let big = f.path("big");
    let mut want = write_files(
        &big,
        "big",
        &(0..8u64)
            .map(|i| (format!("{i}.bin"), 4_000_000, 200 + i))
            .collect::<Vec<_>>(),
    );
    let tail = f.path("tail.bin");
    fs::write(&tail, pseudo_data(2_000_000, 300)).unwrap();
    want.insert("tail.bin".into(), fs::read(&tail).unwrap());
    let gate = Gate::new(&f, "gate");
    let ready = f.path("backup-ready");
    let mut backup = spawn(f.cmd(&[
        "backup",
        big.to_str().unwrap(),
        "--command",
        &gate.command(&ready, &format!("cat '{}'", tail.display())),
        "--stdin-name",
        "tail.bin",
        "--json",
    ]));
    wait_for("the backup to take its lock", &mut backup, || {
        lock_count(&f) >= 1
    });

    // While the backup reads its directory: move to r2 (no state yet: nothing changes),
    // work under r2, roll back to r1, forward to r2, back to r1.
    let out = state(&["transition", "app", "--to", "r2"]);
    assert_ok(&out);
    assert_eq!(describe(&sites), upgraded, "moving to r2 (no state yet)");
    fs::write(
        sites.join("default/files/written-under-r2.bin"),
        pseudo_data(300_000, 70),
    )
    .unwrap();
    let r2 = describe(&sites);
    for (to, want_tree) in [("r1", &r1), ("r2", &r2), ("r1", &r1)] {
        let out = state(&["transition", "app", "--to", to]);
        assert_ok(&out);
        assert!(
            describe(&sites) == *want_tree,
            "after the transition to {to} the live tree is not {to}'s"
        );
    }
    assert!(
        backup.try_wait().unwrap().is_none(),
        "the backup must still be running (it waits for the gate)"
    );
    gate.open();
    let out = backup.wait_with_output().unwrap();
    let id = snapshot_id(&out);

    assert_check_ok(&f, true, "after a backup raced four transitions");
    assert_restores(&f, &id, &want, "the backup that raced the transitions");
    // The live tree is r1's, and each revision's newest snapshot restores as that revision.
    assert_eq!(describe(&sites), r1, "the live tree at the end");
    for (label, tree) in [("app@r1", &r1), ("app@r2", &r2)] {
        let t = f.path(&format!("restore-{label}"));
        assert_ok(&f.run(&["restore", label, "--target", t.to_str().unwrap()]));
        assert!(
            describe(&t.join("sites")) == *tree,
            "{label} does not restore as that revision's tree"
        );
    }
    let h = state(&["history", "app", "--json"]);
    assert_ok(&h);
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(v["active"], "r1");
    let moves: Vec<(String, String)> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] != "dump")
        .map(|t| {
            (
                t["to"].as_str().unwrap_or_default().to_string(),
                t["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        ["r2", "r1", "r2", "r1"].map(|r| (r.to_string(), "ok".to_string())),
        "{v}"
    );
    let siblings: Vec<_> = fs::read_dir(f.path("live"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec!["sites"], "no staging or old tree is left");
}

// ---------------------------------------------------------------------------------------
// 2. Backups racing forget --prune.

#[test]
fn backups_racing_forget_prune_lose_nothing() {
    let f = Fixture::small_packs();
    // Five snapshots of service "old": a tree (a file of its own and one shared by all) and
    // a dump of its own.
    let site = f.path("site");
    let mut old: Vec<(String, Expected)> = Vec::new();
    for r in 0..5u64 {
        let _ = fs::remove_dir_all(&site);
        let mut want = write_files(
            &site,
            "site",
            &[
                ("own.bin", 1_500_000, 1000 + r),
                ("common.bin", 1_000_000, 999),
            ],
        );
        let dump = f.path(&format!("dump{r}.sql"));
        fs::write(&dump, pseudo_data(1_500_000, 2000 + r)).unwrap();
        want.insert("db.sql".into(), fs::read(&dump).unwrap());
        let id = f.backup(&[
            site.to_str().unwrap(),
            "--command",
            &format!("cat '{}'", dump.display()),
            "--stdin-name",
            "db.sql",
            "--service",
            "old",
            "--revision",
            &format!("r{r}"),
        ]);
        old.push((id, want));
    }

    // Two backups of new data, which also hold what only the snapshots about to be
    // forgotten hold (a copy of r0's and r2's own files, r0's, r1's and r2's dumps). Each
    // reads its directory, then waits at the gate.
    let gate = Gate::new(&f, "gate");
    let mut new: Vec<(Child, Expected)> = Vec::new();
    for (n, (copy_of, dumps)) in [(0u64, [0u64, 1]), (2, [2, 4])].into_iter().enumerate() {
        let name = format!("new{n}");
        let mut want = write_files(
            &f.path(&name),
            &name,
            &[
                ("fresh.bin", 2_000_000, 3000 + n as u64),
                ("copy.bin", 1_500_000, 1000 + copy_of),
            ],
        );
        let mut db = Vec::new();
        let mut cat = String::from("cat");
        for d in dumps {
            let p = f.path(&format!("dump{d}.sql"));
            db.extend(fs::read(&p).unwrap());
            cat.push_str(&format!(" '{}'", p.display()));
        }
        want.insert("db.sql".into(), db);
        let ready = f.path(&format!("{name}-ready"));
        let mut child = spawn(f.cmd(&[
            "backup",
            f.path(&name).to_str().unwrap(),
            "--command",
            &gate.command(&ready, &cat),
            "--stdin-name",
            "db.sql",
            "--json",
        ]));
        wait_for(
            &format!("backup {n} to read its directory"),
            &mut child,
            || ready.exists(),
        );
        new.push((child, want));
    }

    // Forget r0..r2 and prune while both backups run; let the prune record and hide its
    // packs, then let the backups finish.
    let mut forget = spawn(f.cmd(&[
        "forget",
        "--service",
        "old",
        "--keep-last",
        "2",
        "--prune",
        "--max-unused",
        "0",
        "--json",
    ]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !prune_recorded(&f) && forget.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the prune never recorded its packs"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    gate.open();
    let mut new_ids = Vec::new();
    for (child, want) in new {
        new_ids.push((snapshot_id(&child.wait_with_output().unwrap()), want));
    }
    let out = forget.wait_with_output().unwrap();
    assert_ok(&out);
    let reports = json_lines(&out);
    assert_eq!(reports.len(), 1, "one JSON object: {reports:?}");
    let forgotten: BTreeSet<String> = reports[0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    let expected_gone: BTreeSet<String> = old[..3].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(forgotten, expected_gone, "forget must forget r0, r1 and r2");
    let prune = &reports[0]["prune"];
    assert!(
        prune["delete_packs"].as_u64().unwrap() + prune["repack_packs"].as_u64().unwrap() > 0,
        "the prune must have had packs to delete: {prune}"
    );
    assert_eq!(prune["deferred"], false, "{prune}");
    eprintln!("prune beside the backups: {prune}");

    // The kept and the new snapshots, and nothing else, are there and restore exactly.
    let now: BTreeSet<String> = f.snapshot_ids().into_iter().collect();
    let kept: BTreeSet<String> = old[3..]
        .iter()
        .chain(&new_ids)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(now, kept, "the snapshots after forget --prune");
    for (id, want) in old[3..].iter().chain(&new_ids) {
        assert_restores(&f, id, want, "after backups raced forget --prune");
    }
    assert_check_ok(&f, true, "after backups raced forget --prune");
    for (id, _) in &old[..3] {
        let t = f.path("gone");
        let out = f.run(&["restore", id, "--target", t.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "forgotten snapshot {id} still restores"
        );
    }
    for r in 0..3 {
        let out = f.run(&["ls", &format!("old@r{r}")]);
        assert!(!out.status.success(), "old@r{r} is still listed");
    }
}

// ---------------------------------------------------------------------------------------
// 3. check racing a backup and a prune.

#[test]
fn check_racing_backup_and_prune_reports_no_false_damage() {
    let f = Fixture::new();
    // A base large enough that a whole read takes a while, verified once now, so the racing
    // checks read it before the packs verified later (least recently verified first).
    let base = f.path("base");
    let base_want = write_files(
        &base,
        "base",
        &(0..40u64)
            .map(|i| (format!("f{i:02}"), 4_000_000, 100 + i))
            .collect::<Vec<_>>(),
    );
    let base_id = f.backup(&[base.to_str().unwrap()]);
    assert_check_ok(&f, true, "the base");

    let mut kept: Vec<(String, Expected)> = vec![(base_id, base_want)];
    let mut gone = Vec::new();
    let mut false_damage = Vec::new();
    for k in 0..3u64 {
        // Something to forget, verified now (so after the base), then forgotten.
        let doomed = f.path("doomed");
        let _ = fs::remove_dir_all(&doomed);
        write_files(
            &doomed,
            "doomed",
            &[
                ("a", 1_500_000, 500 + k * 10),
                ("b", 1_500_000, 501 + k * 10),
                ("c", 1_500_000, 502 + k * 10),
            ],
        );
        let d = f.backup(&[doomed.to_str().unwrap()]);
        let c = f.run(&["check", "--read-data-since", "1h"]);
        assert_ok(&c);
        assert_ok(&f.run(&["forget", &d]));
        gone.push(d);

        // A backup that has written its directory's packs and waits at the gate.
        let name = format!("new{k}");
        let mut want = write_files(
            &f.path(&name),
            &name,
            &[
                ("x", 2_000_000, 600 + k * 10),
                ("y", 2_000_000, 601 + k * 10),
            ],
        );
        let stream = f.path(&format!("stream{k}"));
        fs::write(&stream, pseudo_data(1_000_000, 602 + k * 10)).unwrap();
        want.insert("s.bin".into(), fs::read(&stream).unwrap());
        let gate = Gate::new(&f, &format!("gate{k}"));
        let ready = f.path(&format!("ready{k}"));
        let mut backup = spawn(f.cmd(&[
            "backup",
            f.path(&name).to_str().unwrap(),
            "--command",
            &gate.command(&ready, &format!("cat '{}'", stream.display())),
            "--stdin-name",
            "s.bin",
            "--json",
        ]));
        wait_for("the backup to reach its stream", &mut backup, || {
            ready.exists()
        });
        // A prune, which hides the forgotten snapshot's packs and waits for that backup.
        let mut prune = spawn(f.cmd(&["prune", "--max-unused", "0", "--json"]));
        wait_for("the prune to record its packs", &mut prune, || {
            prune_recorded(&f)
        });
        std::thread::sleep(Duration::from_millis(300));
        // A check, started while both run; then the backup finishes (its snapshot appears
        // during the check), which lets the prune delete the packs (during the check).
        let mut check = spawn(f.cmd(&["check", "--read-data", "--json"]));
        let deadline = Instant::now() + Duration::from_secs(30);
        while lock_count(&f) < 3 && check.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the check never took its lock");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20));
        gate.open();
        let bo = backup.wait_with_output().unwrap();
        let po = prune.wait_with_output().unwrap();
        let co = check.wait_with_output().unwrap();
        kept.push((snapshot_id(&bo), want));
        assert_ok(&po);
        let v: serde_json::Value = serde_json::from_slice(&co.stdout).unwrap_or_default();
        if !co.status.success() || v["ok"] != true {
            false_damage.push(format!(
                "round {k}: check exited {:?}: errors {} damaged {} ({})",
                co.status.code(),
                v["errors"],
                v["damaged"],
                stderr(&co).trim()
            ));
        }
    }
    // Nothing was lost: every kept snapshot restores, the forgotten ones are gone, a final
    // check passes.
    for (id, want) in &kept {
        assert_restores(&f, id, want, "after checks raced backups and prunes");
    }
    let now: BTreeSet<String> = f.snapshot_ids().into_iter().collect();
    for d in &gone {
        assert!(!now.contains(d), "forgotten snapshot {d} is still there");
    }
    assert_eq!(now.len(), kept.len());
    assert_check_ok(&f, true, "the final check");
    assert!(
        false_damage.is_empty(),
        "check reported damage while a backup and a prune ran beside it:\n{}",
        false_damage.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 4. File modes and where the password is (not).

#[test]
fn repository_and_key_files_are_private() {
    let f = Fixture::new();
    let src = f.path("src");
    write_files(&src, "src", &[("a", 2_000_000, 1), ("b", 2_000_000, 2)]);
    f.backup(&[src.to_str().unwrap()]);
    let new_password = "a second password, never an argument";
    assert_ok(
        &f.cmd(&["key", "add"])
            .env("CAIRN_NEW_PASSWORD", new_password)
            .output()
            .unwrap(),
    );
    // The new key opens the repository.
    let out = f
        .cmd(&["key", "list"])
        .env("CAIRN_PASSWORD", new_password)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        fs::read_dir(f.repo().join("keys")).unwrap().count(),
        2,
        "two key files"
    );
    // A state dump (the journal under events/), and a forget and prune (prune/ records).
    let config = f.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "[service.app]\n[[service.app.state]]\nname = \"src\"\npath = \"{}\"\n",
            src.display()
        ),
    )
    .unwrap();
    assert_ok(
        &f.cmd(&["state", "dump", "app", "--revision", "r1"])
            .env("CAIRN_CONFIG", &config)
            .output()
            .unwrap(),
    );
    let first = f.snapshot_ids()[0].clone();
    assert_ok(&f.run(&["forget", &first, "--prune", "--max-unused", "0"]));

    // A backup of a large directory, held at the gate while its lock, packs and temporary
    // files are in the repository.
    let big = f.path("big");
    write_files(
        &big,
        "big",
        &(0..6u64)
            .map(|i| (format!("{i}.bin"), 4_000_000, 40 + i))
            .collect::<Vec<_>>(),
    );
    let gate = Gate::new(&f, "gate");
    let ready = f.path("ready");
    let mut backup = spawn(f.cmd(&[
        "backup",
        big.to_str().unwrap(),
        "--command",
        &gate.command(&ready, "echo tail"),
        "--stdin-name",
        "tail",
    ]));
    wait_for("the backup to take its lock", &mut backup, || {
        lock_count(&f) >= 1
    });
    // Its command line, read while it runs, names no password.
    let cmdline = fs::read(format!("/proc/{}/cmdline", backup.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("backup"), "not the backup: {cmdline}");
    for pw in [PASSWORD, new_password] {
        assert!(
            !cmdline.contains(pw),
            "the password is in the command line: {cmdline}"
        );
    }
    wait_for("the backup to reach its stream", &mut backup, || {
        ready.exists()
    });
    // Every directory is 0700 and every file 0600, except below index/: RocksDB creates
    // those (0644 under a 022 umask), and index/ itself being 0700 keeps others out of
    // them. No one else may write there in any case.
    let check_modes = |when: &str| {
        let root = f.repo();
        let mut bad = Vec::new();
        let mut stack = vec![root.clone()];
        let mut dirs = 0;
        let mut files = 0;
        while let Some(d) = stack.pop() {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
            let rel = d.strip_prefix(&root).unwrap().to_path_buf();
            if rel.starts_with("index") && rel != Path::new("index") {
                if mode & 0o022 != 0 {
                    bad.push(format!("index directory {} is {:o}", d.display(), mode));
                }
            } else if mode != 0o700 {
                bad.push(format!("directory {} is {:o}, not 700", d.display(), mode));
            }
            dirs += 1;
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let p = e.path();
                // A file may go (a temporary renamed, a lock released) while we look.
                let Ok(md) = fs::symlink_metadata(&p) else {
                    continue;
                };
                if md.is_dir() {
                    stack.push(p);
                    continue;
                }
                files += 1;
                let mode = md.permissions().mode() & 0o7777;
                if p.strip_prefix(&root).unwrap().starts_with("index") {
                    if mode & 0o022 != 0 {
                        bad.push(format!("index file {} is {:o}", p.display(), mode));
                    }
                } else if !md.is_file() || mode != 0o600 {
                    bad.push(format!(
                        "file {} is {:o}, not a 600 file",
                        p.display(),
                        mode
                    ));
                }
            }
        }
        assert!(dirs > 5 && files > 5, "{when}: too little looked at");
        assert!(bad.is_empty(), "{when}:\n{}", bad.join("\n"));
    };
    check_modes("while a backup runs");
    gate.open();
    assert_ok(&backup.wait_with_output().unwrap());
    check_modes("after the backup");
    // Keys: exactly two, both 0600.
    for e in fs::read_dir(f.repo().join("keys")).unwrap() {
        let md = e.unwrap().metadata().unwrap();
        assert!(md.is_file());
        assert_eq!(md.permissions().mode() & 0o777, 0o600, "key file mode");
    }
    // No file anywhere in the repository (index included) holds either password.
    for p in files_below(&f.repo()) {
        let data = fs::read(&p).unwrap();
        for pw in [PASSWORD, new_password] {
            assert!(
                !data.windows(pw.len()).any(|w| w == pw.as_bytes()),
                "{} holds a password",
                p.display()
            );
        }
    }
}
