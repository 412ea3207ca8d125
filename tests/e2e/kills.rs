//! SIGKILL of `state transition` and `index rebuild` at random moments. With the backup
//! kills (failures.rs) and the prune kills (lifecycle.rs) that makes 50 kills in all; after
//! each, `check --read-data` passes and completed snapshots restore.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill delays seed {s}");
    s
}

#[test]
fn state_transition_killed_15_times_leaves_a_whole_repository_and_a_recoverable_service() {
    let f = Fixture::new();
    let live = f.path("live");
    fs::create_dir_all(live.join("sites/files")).unwrap();
    let db = live.join("db.sql");
    fs::write(
        f.path("cairn.toml"),
        format!(
            "[service.app]\n[[service.app.state]]\nname = \"sites\"\npath = \"{}\"\n\
             [[service.app.state]]\nname = \"db\"\ndump = [\"cat\", \"{db}\"]\nload = \"cat > '{db}'\"\n",
            live.join("sites").display(),
            db = db.display()
        ),
    )
    .unwrap();
    let state = |args: &[&str]| {
        let mut all = vec!["state"];
        all.extend_from_slice(args);
        let mut c = f.cmd(&all);
        c.env("CAIRN_CONFIG", f.path("cairn.toml"));
        c
    };
    let write_rev = |r: u64| {
        for i in 0..8 {
            fs::write(
                live.join(format!("sites/files/{i}.bin")),
                pseudo_data(400_000, r * 100 + i),
            )
            .unwrap();
        }
        fs::write(&db, pseudo_data(2_000_000, r)).unwrap();
    };
    write_rev(1);
    assert_ok(
        &state(&["dump", "app", "--revision", "r1"])
            .output()
            .unwrap(),
    );
    write_rev(2);
    assert_ok(
        &state(&["load", "app", "--revision", "r2"])
            .output()
            .unwrap(),
    );
    for (round, ms) in delays(seed(), 15, 600).into_iter().enumerate() {
        let to = if round % 2 == 0 { "r1" } else { "r2" };
        let mut child = state(&["transition", "app", "--to", to, "--quiet"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        child.wait().unwrap();
        assert_check_ok(
            &f,
            true,
            &format!("transition round {round} killed after {ms} ms"),
        );
    }
    // The service recovers: a last transition completes. (A load killed midway leaves a
    // half-loaded service that the next transition saves under the active revision, so the
    // newest r1 snapshot need not be the original r1 state; the original is still there.)
    assert_ok(
        &state(&["transition", "app", "--to", "r1"])
            .output()
            .unwrap(),
    );
    let first = f.snapshot_ids();
    let out = f.run(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let oldest = v["snapshots"][0]["id"].as_str().unwrap().to_string();
    assert!(first.contains(&oldest));
    let t = f.path("original-r1");
    assert_ok(&f.run(&["restore", &oldest, "--target", t.to_str().unwrap()]));
    for i in 0..8 {
        assert_eq!(
            fs::read(t.join(format!("sites/files/{i}.bin"))).unwrap(),
            pseudo_data(400_000, 100 + i)
        );
    }
    assert_eq!(fs::read(t.join("db")).unwrap(), pseudo_data(2_000_000, 1));
    let left: Vec<_> = fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "leftovers beside the live state: {left:?}");
    // Every snapshot restores.
    for (i, id) in f.snapshot_ids().iter().enumerate() {
        assert_ok(&f.run(&[
            "restore",
            id,
            "--target",
            f.path(&format!("r{i}")).to_str().unwrap(),
        ]));
    }
}

#[test]
fn index_rebuild_killed_10_times_leaves_an_index_that_works() {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut ids = Vec::new();
    for r in 0..4 {
        fs::write(src.join(format!("{r}.bin")), pseudo_data(3_000_000, r)).unwrap();
        ids.push(f.backup(&[src.to_str().unwrap()]));
    }
    for (round, ms) in delays(seed(), 10, 300).into_iter().enumerate() {
        let mut child = f
            .cmd(&["index", "rebuild", "--quiet"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        child.wait().unwrap();
        assert_check_ok(
            &f,
            true,
            &format!("rebuild round {round} killed after {ms} ms"),
        );
        let t = f.path(&format!("t{round}"));
        assert_ok(&f.run(&["restore", &ids[3], "--target", t.to_str().unwrap()]));
        for r in 0..4 {
            assert_eq!(
                fs::read(t.join(format!("src/{r}.bin"))).unwrap(),
                pseudo_data(3_000_000, r)
            );
        }
    }
    assert_ok(&f.run(&["index", "rebuild"]));
    assert_check_ok(&f, true, "after a completed rebuild");
}
