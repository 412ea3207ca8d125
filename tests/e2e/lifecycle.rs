//! stats, check, forget and prune: what is predicted is what happens, damage is found and
//! named, and prune never loses what a snapshot needs, even killed or racing a backup.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_ok(out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A small repository (1 MiB packs) with `revs` revisions of a tree, two snapshots each.
/// Returns the snapshot ids, oldest first.
fn revisions(f: &Fixture, revs: u64) -> Vec<String> {
    let src = f.path("site");
    let mut ids = Vec::new();
    for r in 0..revs {
        write_revision(&src, r);
        for k in 0..2 {
            fs::write(src.join("log.txt"), format!("revision {r} snapshot {k}\n")).unwrap();
            ids.push(f.backup(&[
                src.to_str().unwrap(),
                "--service",
                "site",
                "--revision",
                &format!("r{r}"),
            ]));
        }
    }
    ids
}

/// Revision `r`: shared files, files unique to the revision, one file changed each time.
fn write_revision(src: &Path, r: u64) {
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::create_dir_all(src.join("own")).unwrap();
    for i in 0..6 {
        fs::write(src.join(format!("shared/{i}.bin")), pseudo_data(200_000, i)).unwrap();
    }
    for i in 0..4 {
        fs::write(
            src.join(format!("own/{i}.bin")),
            pseudo_data(150_000 + i as usize * 1000, 1000 * (r + 1) + i),
        )
        .unwrap();
    }
}

fn pack_bytes(f: &Fixture) -> u64 {
    files_below(&f.repo().join("packs"))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn forget_and_prune_free_what_stats_predicted_and_kept_snapshots_restore() {
    let f = Fixture::small_packs();
    let ids = revisions(&f, 5);
    assert_eq!(ids.len(), 10);
    // Forget both snapshots of r1 and r2 and the first of r3.
    let gone = [&ids[2], &ids[3], &ids[4], &ids[5], &ids[6]];
    let mut args = vec!["stats", "--json"];
    args.extend(gone.iter().map(|s| s.as_str()));
    let predicted = json(&f.run(&args))["selected_unique_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        predicted > 500_000,
        "the set should own real data: {predicted}"
    );
    let mut args = vec!["forget", "--json"];
    args.extend(gone.iter().map(|s| s.as_str()));
    let v = json(&f.run(&args));
    assert_eq!(v["forget"], 5);
    assert_eq!(
        v["frees_bytes"].as_u64().unwrap(),
        predicted,
        "forget and stats agree"
    );
    let before = pack_bytes(&f);
    let r = json(&f.run(&["prune", "--max-unused", "0", "--json"]));
    let after = pack_bytes(&f);
    assert_eq!(r["pack_bytes_after"].as_u64().unwrap(), after);
    let freed = before - after;
    let err = (freed as f64 - predicted as f64).abs() / predicted as f64;
    assert!(
        err <= 0.02,
        "freed {freed} bytes, stats predicted {predicted} ({:.2}% off)",
        err * 100.0
    );
    eprintln!(
        "prune freed {freed} bytes; stats predicted {predicted} ({:.3}% off)",
        err * 100.0
    );
    // Every kept snapshot restores identical.
    let kept: Vec<(usize, &String)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !gone.contains(id))
        .collect();
    for (i, id) in kept {
        let rev = (i / 2) as u64;
        let want = f.path(&format!("want-{i}"));
        write_revision(&want, rev);
        fs::write(
            want.join("log.txt"),
            format!("revision {rev} snapshot {}\n", i % 2),
        )
        .unwrap();
        let t = f.path(&format!("restore-{i}"));
        assert_ok(&f.run(&["restore", id, "--target", t.to_str().unwrap()]));
        let (a, b) = (describe(&want), describe(&t.join("site")));
        let strip = |m: std::collections::BTreeMap<Vec<u8>, String>| -> Vec<(Vec<u8>, String)> {
            // Compare content and kind; the fresh copy's mtimes differ by construction.
            m.into_iter()
                .map(|(k, v)| (k, v.split(" mode").next().unwrap().to_string()))
                .collect()
        };
        assert_eq!(strip(a), strip(b), "snapshot {i} ({id})");
    }
    let c = json(&f.run(&["check", "--read-data", "--json"]));
    assert_eq!(c["ok"], true, "{c}");
}

#[test]
fn check_read_data_names_every_file_a_flipped_byte_damages() {
    let f = Fixture::new();
    let src = f.path("data");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/victim.bin"), pseudo_data(100_000, 1)).unwrap();
    fs::write(src.join("copy-of-victim.bin"), pseudo_data(100_000, 1)).unwrap();
    fs::write(src.join("zz-bystander.bin"), pseudo_data(100_000, 2)).unwrap();
    let a = f.backup(&[src.to_str().unwrap(), "--service", "s", "--revision", "r1"]);
    assert_ok(&f.run(&["check", "--read-data"]));
    // The pack's first blob: data chunks are written in path order, so copy-of-victim.bin's
    // chunk (shared with sub/victim.bin) comes first.
    let packs = files_below(&f.repo().join("packs"));
    assert_eq!(packs.len(), 1);
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[48 + 50] ^= 0x40;
    fs::write(&packs[0], &bytes).unwrap();
    // Structure alone does not read blobs; data does.
    let out = f.run(&["check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("/data/copy-of-victim.bin"), "{err}");
    assert!(err.contains("/data/sub/victim.bin"), "{err}");
    assert!(err.contains("s@r1") && err.contains(&a[..8]), "{err}");
    assert!(
        !err.contains("bystander"),
        "an intact file is not affected: {err}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&f.run(&["check", "--read-data", "--json"]).stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["damaged"].as_array().unwrap().len(), 1);
}

#[test]
fn four_quarter_subset_checks_together_verify_every_pack() {
    let f = Fixture::small_packs();
    let src = f.path("d");
    fs::create_dir_all(&src).unwrap();
    for i in 0..30 {
        fs::write(src.join(format!("{i}.bin")), pseudo_data(600_000, i)).unwrap();
    }
    f.backup(&[src.to_str().unwrap()]);
    let all: HashSet<String> = files_below(&f.repo().join("packs"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(all.len() >= 8, "want several packs, got {}", all.len());
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let v = json(&f.run(&["check", "--read-data-subset", "25%", "--json"]));
        let read: Vec<String> = v["read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert_eq!(read.len(), all.len().div_ceil(4));
        seen.extend(read);
    }
    assert_eq!(seen, all, "four quarter runs must cover every pack");
}

#[test]
fn prune_killed_at_20_random_moments_leaves_a_whole_repository() {
    let f = Fixture::small_packs();
    let keep_src = f.path("keep");
    fs::create_dir_all(&keep_src).unwrap();
    for i in 0..4 {
        fs::write(
            keep_src.join(format!("{i}.bin")),
            pseudo_data(700_000, 500 + i),
        )
        .unwrap();
    }
    let keep = f.backup(&[
        keep_src.to_str().unwrap(),
        "--service",
        "keep",
        "--revision",
        "k",
    ]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill delays seed {seed}");
    let junk = f.path("junk");
    for (round, ms) in delays(seed, 20, 400).into_iter().enumerate() {
        // Garbage for prune to work on: a snapshot sharing packs with kept data, then forgotten.
        fs::create_dir_all(&junk).unwrap();
        fs::write(
            junk.join("j.bin"),
            pseudo_data(1_500_000, 10_000 + round as u64),
        )
        .unwrap();
        fs::copy(keep_src.join("0.bin"), junk.join("shared.bin")).unwrap();
        let j = f.backup(&[junk.to_str().unwrap()]);
        assert_ok(&f.run(&["forget", &j]));
        let child = f
            .cmd(&["prune", "--max-unused", "0", "--quiet"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kill_after(child, ms);
        assert_check_ok(
            &f,
            false,
            &format!("round {round} (killed after {ms} ms, seed {seed})"),
        );
        let t = f.path(&format!("r{round}"));
        assert_ok(&f.run(&["restore", &keep, "--target", t.to_str().unwrap()]));
        for i in 0..4 {
            assert_eq!(
                fs::read(t.join(format!("keep/{i}.bin"))).unwrap(),
                pseudo_data(700_000, 500 + i),
                "round {round}"
            );
        }
        fs::remove_dir_all(&t).unwrap();
    }
    // A final prune completes and leaves nothing unused.
    let r = json(&f.run(&["prune", "--max-unused", "0", "--json"]));
    assert_eq!(r["deferred"], false);
    assert!(
        !f.repo().join("prune").exists()
            || fs::read_dir(f.repo().join("prune"))
                .unwrap()
                .next()
                .is_none()
    );
    let s = json(&f.run(&["stats", "--json"]));
    assert_eq!(s["repository"]["unused_bytes"], 0, "{s}");
    assert_eq!(
        json(&f.run(&["check", "--read-data", "--json"]))["ok"],
        true
    );
}

#[test]
fn backup_and_prune_at_the_same_time_both_succeed() {
    let f = Fixture::small_packs();
    let a = f.path("a");
    fs::create_dir_all(&a).unwrap();
    for i in 0..20 {
        fs::write(a.join(format!("{i}.bin")), pseudo_data(1_000_000, i)).unwrap();
    }
    let first = f.backup(&[a.to_str().unwrap()]);
    // Half of it becomes garbage for prune to repack and delete.
    let b = f.path("b");
    fs::create_dir_all(&b).unwrap();
    for i in 0..10 {
        fs::copy(a.join(format!("{i}.bin")), b.join(format!("{i}.bin"))).unwrap();
    }
    let second = f.backup(&[b.to_str().unwrap()]);
    assert_ok(&f.run(&["forget", &first]));
    // A backup that shares chunks with what prune is moving, started first, then prune.
    let c = f.path("c");
    fs::create_dir_all(&c).unwrap();
    for i in 0..30 {
        let seed = if i < 20 { i } else { 100 + i };
        fs::write(c.join(format!("{i}.bin")), pseudo_data(1_000_000, seed)).unwrap();
    }
    let backup = f
        .cmd(&["backup", c.to_str().unwrap(), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let prune = f
        .cmd(&["prune", "--max-unused", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bo = backup.wait_with_output().unwrap();
    let po = prune.wait_with_output().unwrap();
    assert_ok(&bo);
    assert_ok(&po);
    // And a prune first, then a backup.
    let third: serde_json::Value = serde_json::from_slice(&bo.stdout).unwrap();
    let third = third["id"].as_str().unwrap().to_string();
    assert_ok(&f.run(&["forget", &second]));
    let prune = f
        .cmd(&["prune", "--max-unused", "0", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let fourth = f.backup(&[b.to_str().unwrap()]);
    assert_ok(&prune.wait_with_output().unwrap());
    assert_eq!(
        json(&f.run(&["check", "--read-data", "--json"]))["ok"],
        true
    );
    // Everything the surviving snapshots hold restores.
    let t = f.path("t3");
    assert_ok(&f.run(&["restore", &third, "--target", t.to_str().unwrap()]));
    for i in 0..30 {
        let seed = if i < 20 { i } else { 100 + i };
        assert_eq!(
            fs::read(t.join(format!("c/{i}.bin"))).unwrap(),
            pseudo_data(1_000_000, seed)
        );
    }
    let t = f.path("t4");
    assert_ok(&f.run(&["restore", &fourth, "--target", t.to_str().unwrap()]));
    for i in 0..10 {
        assert_eq!(
            fs::read(t.join(format!("b/{i}.bin"))).unwrap(),
            pseudo_data(1_000_000, i as u64)
        );
    }
    // Finally nothing is left over.
    let r = json(&f.run(&["prune", "--max-unused", "0", "--json"]));
    assert_eq!(r["deferred"], false);
}
