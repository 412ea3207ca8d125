//! `cairn state` against a real MariaDB and a Drupal-like `sites/` tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::mariadb::MariaDb;
use crate::support::*;

struct Site {
    f: Fixture,
    db: MariaDb,
}

const EXCLUDED: &str = "default/files/css";

impl Site {
    fn new() -> Self {
        let f = Fixture::new();
        let db = MariaDb::start();
        let s = Site { f, db };
        s.write_config("");
        s
    }

    fn sites(&self) -> std::path::PathBuf {
        self.f.path("live/sites")
    }

    /// The service file: "drupal", plus whatever `extra` adds.
    fn write_config(&self, extra: &str) {
        let text = format!(
            r#"
[service.drupal]
stop = "echo stopping drupal"
start = "echo starting drupal"

[[service.drupal.state]]
name = "sites"
path = "{sites}"
exclude = ["{EXCLUDED}"]

[[service.drupal.state]]
name = "db"
dump = "{dump}"
load = "{client}"
{extra}"#,
            sites = self.sites().display(),
            dump = self.db.dump_cmd("drupal"),
            client = self.db.client(),
        );
        fs::write(self.f.path("cairn.toml"), text).unwrap();
    }

    fn state(&self, args: &[&str]) -> Output {
        let mut all = vec!["state"];
        all.extend_from_slice(args);
        self.f
            .cmd(&all)
            .env("CAIRN_CONFIG", self.f.path("cairn.toml"))
            .output()
            .unwrap()
    }

    /// The tree, without the excluded cache directory.
    fn tree(&self) -> BTreeMap<Vec<u8>, String> {
        describe(&self.sites())
            .into_iter()
            .filter(|(k, _)| !k.starts_with(EXCLUDED.as_bytes()))
            .collect()
    }

    fn snapshot(&self) -> (Vec<String>, BTreeMap<Vec<u8>, String>) {
        (self.db.fingerprint("drupal"), self.tree())
    }

    /// The r1 state: a database of nodes and users, and a sites/ tree.
    fn make_r1(&self) {
        let s = self.sites();
        fs::create_dir_all(s.join("default/files/css")).unwrap();
        fs::write(
            s.join("default/settings.php"),
            "<?php\n$settings['hash_salt'] = 'r1';\n",
        )
        .unwrap();
        for i in 0..20 {
            fs::write(
                s.join(format!("default/files/upload-{i}.jpg")),
                pseudo_data(30_000 + i * 1000, i as u64),
            )
            .unwrap();
        }
        fs::write(s.join("default/files/css/cache.css"), "body{}").unwrap();
        self.db.sql(
            "CREATE DATABASE drupal; \
             CREATE TABLE drupal.node (nid INT PRIMARY KEY, title VARCHAR(255), body TEXT); \
             CREATE TABLE drupal.users (uid INT PRIMARY KEY, name VARCHAR(60), mail VARCHAR(255));",
        );
        let mut rows = Vec::new();
        for n in 1..=3000 {
            rows.push(format!(
                "({n},'node {n}','body of node {n}: {}')",
                "lorem ipsum ".repeat(n % 7 + 1)
            ));
        }
        self.db.sql(&format!(
            "INSERT INTO drupal.node VALUES {}",
            rows.join(",")
        ));
        let users: Vec<String> = (1..=200)
            .map(|u| format!("({u},'user{u}','user{u}@example.org')"))
            .collect();
        self.db.sql(&format!(
            "INSERT INTO drupal.users VALUES {}",
            users.join(",")
        ));
    }

    /// What an upgrade to r2 does: a schema change, a data migration, a new table, files.
    fn upgrade_to_r2(&self) {
        self.db.sql(
            "ALTER TABLE drupal.node ADD COLUMN langcode VARCHAR(12) NOT NULL DEFAULT 'und'; \
             UPDATE drupal.node SET title = CONCAT(title, ' (migrated)') WHERE nid % 37 = 0; \
             CREATE TABLE drupal.node_revision (vid INT PRIMARY KEY, nid INT); \
             INSERT INTO drupal.node_revision SELECT nid, nid FROM drupal.node WHERE nid < 100; \
             DELETE FROM drupal.users WHERE uid > 190;",
        );
        let s = self.sites();
        fs::write(
            s.join("default/settings.php"),
            "<?php\n$settings['hash_salt'] = 'r2';\n$config['x'] = 1;\n",
        )
        .unwrap();
        fs::write(
            s.join("default/files/upload-new.png"),
            pseudo_data(50_000, 99),
        )
        .unwrap();
        fs::remove_file(s.join("default/files/upload-3.jpg")).unwrap();
    }
}

#[test]
fn transitions_roll_a_real_mariadb_and_tree_back_and_forth() {
    let site = Site::new();
    site.make_r1();
    let r1 = site.snapshot();
    // 1. state at r1
    let out = site.state(&["dump", "drupal", "--revision", "r1"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("changes made after this moment are not in it")
    );
    // 2. the upgrade migrates state in place
    site.upgrade_to_r2();
    // 3. move to r2 (no state yet), then work under r2
    let out = site.state(&["transition", "drupal", "--to", "r2"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("has no state yet"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    site.db
        .sql("INSERT INTO drupal.node VALUES (5000, 'written under r2', 'new', 'en')");
    fs::write(
        site.sites().join("default/files/upload-r2.jpg"),
        pseudo_data(10_000, 7),
    )
    .unwrap();
    fs::write(
        site.sites().join("default/files/css/cache.css"),
        "body{color:red}",
    )
    .unwrap();
    let r2 = site.snapshot();
    assert_ne!(r1.0, r2.0);
    assert_ne!(r1.1, r2.1);
    // 4. roll back to r1: every table and the tree are exactly r1's
    let out = site.state(&["transition", "drupal", "--to", "r1"]);
    assert_ok(&out);
    let back = site.snapshot();
    assert_eq!(back.0, r1.0, "database after rolling back to r1");
    assert_eq!(back.1, r1.1, "tree after rolling back to r1");
    // 5. forward again: exactly the r2 state as it was at step 4
    let out = site.state(&["transition", "drupal", "--to", "r2"]);
    assert_ok(&out);
    let fwd = site.snapshot();
    assert_eq!(fwd.0, r2.0, "database after rolling forward to r2");
    assert_eq!(fwd.1, r2.1, "tree after rolling forward to r2");
    // No staging or old trees are left beside the live one.
    let siblings: Vec<_> = fs::read_dir(site.f.path("live"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, vec!["sites"]);
    // The excluded cache is not in any snapshot.
    let ls = site.f.run(&["ls", "drupal@r2"]);
    assert_ok(&ls);
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("cache.css"));
    // History and list tell the story.
    let h = site.state(&["history", "drupal", "--json"]);
    assert_ok(&h);
    let v: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(v["active"], "r2");
    let moves: Vec<(String, String)> = v["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["to"].as_str().unwrap().to_string(),
                t["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        moves,
        [("r2", "ok"), ("r1", "ok"), ("r2", "ok")].map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let l = site.state(&["list", "--json"]);
    assert_ok(&l);
    let v: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    assert_eq!(v["services"][0]["service"], "drupal");
    assert_eq!(v["services"][0]["active"], "r2");
    // Point in time: r1~1 is the first r1 snapshot; restore by revision gives the r1 dump.
    let t = site.f.path("r1-restore");
    assert_ok(&site.f.run(&[
        "restore",
        "drupal@r1~1",
        "--target",
        t.to_str().unwrap(),
        "--include",
        "db",
    ]));
    let dump = fs::read_to_string(t.join("db")).unwrap();
    assert!(dump.contains("CREATE TABLE `node`") && !dump.contains("langcode"));
}

#[test]
fn loading_a_revision_without_state_changes_nothing_and_exits_0() {
    let site = Site::new();
    site.make_r1();
    let before = site.snapshot();
    let out = site.state(&["load", "drupal", "--revision", "brand-new"]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("has no state: nothing was changed"));
    assert_eq!(site.snapshot(), before);
    assert!(
        site.f.snapshot_ids().is_empty(),
        "no snapshot may be written"
    );
}

#[test]
fn a_failing_dump_leaves_no_snapshot_and_no_change() {
    let site = Site::new();
    site.make_r1();
    site.write_config(&format!(
        r#"
[service.broken]
[[service.broken.state]]
name = "sites"
path = "{}"
[[service.broken.state]]
name = "db"
dump = "echo partial output; exit 3"
load = "cat > /dev/null"
"#,
        site.sites().display()
    ));
    let before = site.snapshot();
    let out = site.state(&["dump", "broken", "--revision", "r1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exit status 3"), "{}", stderr(&out));
    assert!(site.f.snapshot_ids().is_empty());
    assert_eq!(site.snapshot(), before);
}

#[test]
fn a_load_that_fails_midway_puts_the_previous_state_back() {
    let site = Site::new();
    site.make_r1();
    assert_ok(&site.state(&["dump", "drupal", "--revision", "r1"]));
    site.upgrade_to_r2();
    let current = site.snapshot();
    // The same state, loaded by a client that dies after the first kilobytes the first time
    // it runs (half a load), and works when cairn puts the previous state back.
    site.write_config(&format!(
        r#"
[service.drupal-broken]
[[service.drupal-broken.state]]
name = "sites"
path = "{sites}"
exclude = ["{EXCLUDED}"]
[[service.drupal-broken.state]]
name = "db"
dump = "{dump}"
load = "if [ -e {flag} ]; then {client}; else touch {flag}; head -c 3000 | {client} --force; exit 1; fi"
"#,
        sites = site.sites().display(),
        dump = site.db.dump_cmd("drupal"),
        client = site.db.client(),
        flag = site.f.path("failed-once").display(),
    ));
    // Give drupal-broken the r1 state under its own name, then try to load it.
    let id = site.f.snapshot_ids()[0].clone();
    let tmp = site.f.path("r1");
    assert_ok(
        &site
            .f
            .run(&["restore", &id, "--target", tmp.to_str().unwrap()]),
    );
    let feed = site.f.run(&[
        "backup",
        tmp.join("sites").to_str().unwrap(),
        "--command",
        &format!("cat {}", tmp.join("db").display()),
        "--stdin-name",
        "db",
        "--service",
        "drupal-broken",
        "--revision",
        "r1",
    ]);
    assert_ok(&feed);
    let out = site.state(&["load", "drupal-broken", "--revision", "r1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("previous state was put back"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        site.snapshot(),
        current,
        "the state before the failed load must be back"
    );
}

#[test]
fn a_full_filesystem_under_the_target_fails_clearly_with_the_state_intact() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let f = Fixture::new();
    let mnt = f.path("small");
    fs::create_dir_all(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=6m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&mnt);
    let files = mnt.join("files");
    fs::create_dir_all(&files).unwrap();
    fs::write(
        f.path("cairn.toml"),
        format!(
            "[service.uploads]\n[[service.uploads.state]]\nname = \"files\"\npath = \"{}\"\n",
            files.display()
        ),
    )
    .unwrap();
    let state = |args: &[&str]| {
        let mut all = vec!["state"];
        all.extend_from_slice(args);
        f.cmd(&all)
            .env("CAIRN_CONFIG", f.path("cairn.toml"))
            .output()
            .unwrap()
    };
    fs::write(files.join("big.bin"), pseudo_data(4 << 20, 1)).unwrap();
    assert_ok(&state(&["dump", "uploads", "--revision", "big"]));
    fs::remove_file(files.join("big.bin")).unwrap();
    fs::write(files.join("other.bin"), pseudo_data(3 << 20, 2)).unwrap();
    let before = describe(&files);
    let out = state(&["load", "uploads", "--revision", "big"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no space left"), "{}", stderr(&out));
    assert_eq!(describe(&files), before, "the live state must be untouched");
    let left: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec!["files"],
        "no staging directory may be left behind"
    );
}

#[test]
fn unknown_service_and_bad_service_file_give_clear_errors() {
    let site = Site::new();
    let out = site.state(&["dump", "nope", "--revision", "r1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no service \"nope\"") && stderr(&out).contains("drupal"),
        "{}",
        stderr(&out)
    );
    fs::write(
        site.f.path("cairn.toml"),
        "[service.a]\n[[service.a.state]]\nname = \"db\"\ndump = \"x\"\n",
    )
    .unwrap();
    let out = site.state(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("no `load`"),
        "{}",
        stderr(&out)
    );
    fs::write(site.f.path("cairn.toml"), "[service.a]\nstopp = \"x\"\n").unwrap();
    let out = site.state(&["list"]);
    assert!(
        stderr(&out).contains("line 2") && stderr(&out).contains("stopp"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn two_transitions_of_one_service_at_once_never_mix_state() {
    let site = Site::new();
    site.make_r1();
    assert_ok(&site.state(&["dump", "drupal", "--revision", "r1"]));
    site.upgrade_to_r2();
    assert_ok(&site.state(&["transition", "drupal", "--to", "r2"]));
    let r2 = site.snapshot();
    // A slow stop command keeps the first transition busy while the second starts.
    let cfg = fs::read_to_string(site.f.path("cairn.toml"))
        .unwrap()
        .replace("echo stopping drupal", "sleep 2");
    fs::write(site.f.path("cairn.toml"), cfg).unwrap();
    let spawn = || {
        site.f
            .cmd(&["state", "transition", "drupal", "--to", "r1"])
            .env("CAIRN_CONFIG", site.f.path("cairn.toml"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    std::thread::sleep(Duration::from_millis(700));
    let second = spawn();
    let a = first.wait_with_output().unwrap();
    let b = second.wait_with_output().unwrap();
    assert_ok(&a);
    assert_eq!(
        b.status.code(),
        Some(11),
        "the second must fail as locked: {}",
        stderr(&b)
    );
    assert!(stderr(&b).contains("locked"), "{}", stderr(&b));
    // Exactly r1's state: the first transition completed, the second changed nothing.
    let now = site.snapshot();
    assert_ne!(now, r2);
    let _ = r2;
    assert_ok(&site.state(&["transition", "drupal", "--to", "r2"]));
    assert_eq!(site.snapshot(), r2);
}
