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

/// Large enough that piping it into the load program takes a while, so that many kills land
/// after the tree was swapped in and before the dump was loaded: the half-loaded moment.
const DB_LEN: usize = 40 << 20;

#[test]
fn state_transition_killed_15_times_leaves_a_whole_repository_and_never_saves_a_half_loaded_state()
{
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
        fs::write(&db, pseudo_data(DB_LEN, r)).unwrap();
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
    // The service recovers: a last transition completes, and the live state is whole r1.
    // (A transition killed while it changed the live state left a marker in the journal;
    // the next state command put the state saved before it back first, so no half-loaded
    // state was ever saved.)
    assert_ok(
        &state(&["transition", "app", "--to", "r1"])
            .output()
            .unwrap(),
    );
    let is_rev = |dir: &std::path::Path, db_name: &str, r: u64| {
        (0..8).all(|i| {
            fs::read(dir.join(format!("sites/files/{i}.bin"))).ok()
                == Some(pseudo_data(400_000, r * 100 + i))
        }) && fs::read(dir.join(db_name)).ok() == Some(pseudo_data(DB_LEN, r))
    };
    assert!(is_rev(&live, "db.sql", 1), "the live state is not whole r1");
    assert_check_ok(&f, true, "after the last transition");
    let left: Vec<_> = fs::read_dir(&live)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "leftovers beside the live state: {left:?}");
    // Every state snapshot holds exactly its revision's state: r1's or r2's, never a mix.
    let out = f.run(&["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, s) in v["snapshots"].as_array().unwrap().iter().enumerate() {
        let id = s["id"].as_str().unwrap();
        let r = match s["revision"].as_str() {
            Some("r1") => 1,
            Some("r2") => 2,
            other => panic!("snapshot {id} has revision {other:?}"),
        };
        let t = f.path(&format!("snap{i}"));
        assert_ok(&f.run(&["restore", id, "--target", t.to_str().unwrap()]));
        assert!(
            is_rev(&t, "db", r),
            "snapshot {id} labelled r{r} does not hold r{r}'s state whole"
        );
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
