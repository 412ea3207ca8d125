//! SIGKILL of `state transition`, `index rebuild`, and of dump backups and prunes over delta
//! chains, at random moments (and, for dump backups, just after a pack is written). With the
//! backup kills (failures.rs) and the prune kills (lifecycle.rs) that makes over 70 kills in
//! all; after each, `check` passes and completed snapshots restore.

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

/// Revision `r` of a dump for the delta-chain kills: a table with a few scattered changes
/// per revision, and one whose every row gets a new token (a session table), so a revision
/// writes several packs of runs.
fn chain_dump(r: u64) -> Vec<u8> {
    let mut d = crate::delta::dump(r, 100_000);
    d.extend_from_slice(b"CREATE TABLE s (id INT, token CHAR(16), note TEXT);\n");
    for i in 0..300_000u64 {
        let mut x = (i << 20 | r).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
        d.extend_from_slice(
            format!(
                "INSERT INTO s VALUES ({i},'{x:016x}','customer {} since {}');\n",
                i % 977,
                2000 + i % 25
            )
            .as_bytes(),
        );
    }
    d
}

/// The revisions still kept, by number, of those `None` marks as forgotten.
fn kept(revs: &[Option<Vec<u8>>]) -> impl Iterator<Item = (usize, &Vec<u8>)> {
    revs.iter()
        .enumerate()
        .filter_map(|(k, d)| Some((k, d.as_ref()?)))
}

/// Whether some chunk of the dump in snapshot `spec` is stored inside a delta run.
fn holds_runs(f: &Fixture, spec: &str) -> bool {
    use cairn_store::repo::{Mode, Repo};
    use cairn_store::tree::Node;
    let repo = Repo::open(&f.repo(), PASSWORD.as_bytes(), Mode::Read).unwrap();
    let (service, rev) = spec.split_once('@').unwrap();
    let (_, snap) = repo
        .snapshots()
        .unwrap()
        .into_iter()
        .find(|(_, s)| s.service.as_deref() == Some(service) && s.revision.as_deref() == Some(rev))
        .expect("the snapshot");
    let tree = repo.load_tree(&snap.tree).unwrap();
    let Node::File(parts) = &tree.entries[0].node else {
        panic!("a dump is a file")
    };
    let mut members = std::collections::HashSet::new();
    repo.index()
        .for_each_member(|member, _| {
            members.insert(*member);
        })
        .unwrap();
    parts.iter().any(|p| members.contains(&p.id))
}

/// How many packs `prune --max-unused 0` (with `extra` options) deletes or rewrites.
fn prune_work(f: &Fixture, extra: &[&str]) -> u64 {
    let mut args = vec!["prune", "--max-unused", "0"];
    args.extend_from_slice(extra);
    let out = f.run(&args);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["delete_packs"].as_u64().unwrap() + v["repack_packs"].as_u64().unwrap()
}

/// How many packs `packs/` holds (files named by their id: not the temporary files a killed
/// write leaves).
fn pack_count(f: &Fixture) -> usize {
    files_below(&f.repo().join("packs"))
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .count()
}

/// Kills `child` `extra` ms after `packs/` holds more than `packs` packs (or once it has
/// ended); returns whether it was still running then, and after how many ms it was killed.
fn kill_after_new_pack(
    f: &Fixture,
    mut child: std::process::Child,
    packs: usize,
    extra: u64,
) -> (bool, u64) {
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && pack_count(f) <= packs {
        std::thread::sleep(Duration::from_millis(1));
    }
    let running = kill_after(child, extra);
    (running, t.elapsed().as_millis() as u64)
}

#[test]
fn a_dump_backup_killed_while_writing_delta_runs_leaves_the_chain_whole() {
    use crate::delta::{assert_dumps_exact, backup_dump, dump_backup};
    let f = Fixture::small_packs();
    // The revisions whose backup completed, by number.
    let mut done: Vec<(usize, Vec<u8>)> = Vec::new();
    for r in 0..3 {
        let d = chain_dump(r as u64);
        backup_dump(&f, &d, &format!("r{r}"));
        done.push((r, d));
    }
    // A revision over a chain, timed, so the kills land all through the next ones.
    let t = std::time::Instant::now();
    backup_dump(&f, &chain_dump(3), "r3");
    done.push((3, chain_dump(3)));
    let took = t.elapsed().as_millis() as u64;
    let seed = seed();
    let (mut rounds, mut in_flight, mut mid_write) = (0, 0, 0);
    // Each round backs up a new revision over the last one that completed (one killed late
    // may have). Rounds go on until a kill landed after a pack of runs was written and
    // before the snapshot naming it.
    while rounds < 12 || mid_write == 0 {
        assert!(
            rounds < 40,
            "in 40 kills none landed between pack and snapshot"
        );
        let r = 4 + rounds;
        let ms = delays(seed ^ r as u64, 1, took.max(100))[0];
        let d = chain_dump(r as u64);
        let (packs, snapshots) = (pack_count(&f), f.snapshot_ids().len());
        let child = dump_backup(&f, &d, &format!("r{r}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every other round, the kill waits for a new pack instead, then up to 20 ms more:
        // packs are written beside the backup, and its end follows the last one closely, so
        // kills at random moments alone met that stretch in 1 of 10 rounds or fewer.
        let (running, ms) = if rounds % 2 == 1 {
            kill_after_new_pack(&f, child, packs, ms % 20)
        } else {
            (kill_after(child, ms), ms)
        };
        in_flight += running as usize;
        rounds += 1;
        if f.snapshot_ids().len() > snapshots {
            done.push((r, d));
        } else if pack_count(&f) > packs {
            mid_write += 1;
        }
        let what = format!("r{r}: backup killed after {ms} ms (seed {seed})");
        assert_check_ok(&f, false, &what);
        assert_dumps_exact(&f, done.iter().map(|(k, d)| (*k, d)), &format!("{what}: "));
    }
    assert!(
        in_flight * 3 >= rounds,
        "only {in_flight} of {rounds} kills found the backup running"
    );
    // The next backup completes, over the packs the killed ones left, as runs.
    let last = 4 + rounds;
    backup_dump(&f, &chain_dump(last as u64), &format!("r{last}"));
    done.push((last, chain_dump(last as u64)));
    assert_dumps_exact(&f, done.iter().map(|(k, d)| (*k, d)), "");
    // Chains are at most 8 revisions deep (then a revision is stored as chunks again), so
    // which of them holds runs depends on how many backups completed.
    assert!(
        done.iter()
            .filter(|(k, _)| holds_runs(&f, &format!("db@r{k}")))
            .count()
            * 2
            >= done.len(),
        "fewer than half the revisions hold delta runs"
    );
    assert_check_ok(&f, true, "after the last backup");
}

#[test]
fn prune_killed_over_delta_chains_keeps_every_base_a_kept_revision_needs() {
    use crate::delta::{assert_dumps_exact, backup_dump};
    let f = Fixture::small_packs();
    let seed = seed();
    let mut revs: Vec<Option<Vec<u8>>> = Vec::new();
    let (mut in_flight, mut rounds) = (0, 0);
    let mut took = 0;
    for r in 0..9u64 {
        let d = chain_dump(r);
        backup_dump(&f, &d, &format!("r{r}"));
        revs.push(Some(d));
        if r < 3 {
            continue;
        }
        // Kept: r0 (every chain starts there) and the newest two. The one before them goes,
        // though the runs of the newest are based on its runs.
        assert_ok(&f.run(&["forget", &format!("db@r{}", r - 2)]));
        revs[r as usize - 2] = None;
        if r == 3 {
            // The first prune runs whole and is timed, so later kills land all through one.
            let t = std::time::Instant::now();
            assert!(
                prune_work(&f, &["--json"]) > 0,
                "the first prune had nothing to do"
            );
            took = t.elapsed().as_millis() as u64;
            continue;
        }
        // Packs to delete or rewrite beside the runs the kept revisions need.
        assert!(
            prune_work(&f, &["--json", "--dry-run"]) > 0,
            "r{r}: nothing to prune"
        );
        // No floor worth the name: since prune stopped asking the index about every chunk, it
        // takes tens of milliseconds here, and kills aimed up to 100 ms missed most of it.
        for ms in delays(seed ^ r, 2, took.max(5)) {
            let child = f
                .cmd(&["prune", "--max-unused", "0", "--quiet"])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let running = kill_after(child, ms);
            in_flight += running as usize;
            if !running {
                // It finished sooner than the first (timed on a busier machine, maybe):
                // later kills aim within the time this one took at most.
                took = took.min(ms * 3 / 4);
            }
            rounds += 1;
            let what = format!("r{r}: prune killed after {ms} ms (seed {seed})");
            assert_check_ok(&f, false, &what);
            assert_dumps_exact(&f, kept(&revs), &format!("{what}: "));
        }
    }
    assert!(
        in_flight * 2 >= rounds,
        "only {in_flight} of {rounds} kills found prune running"
    );
    // A last prune completes; every kept revision is whole and every byte verifies.
    assert_ok(&f.run(&["prune", "--max-unused", "0", "--quiet"]));
    assert_dumps_exact(&f, kept(&revs), "after the last prune: ");
    assert_check_ok(&f, true, "after the last prune");
}
