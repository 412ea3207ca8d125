//! `cairn repair`: after damage, what is whole is kept, what is lost is named, nothing is
//! deleted, and `check` passes again.

use std::fs;
use std::path::Path;

use crate::support::*;

const FILES: u64 = 8;

fn content(i: u64) -> Vec<u8> {
    pseudo_data(600_000, 40 + i)
}

/// A repository (1 MiB packs, so the files spread over several) with one labelled snapshot
/// of FILES files, a hard link to the first, and a small file.
fn setup() -> (Fixture, String) {
    let f = Fixture::small_packs();
    let src = f.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..FILES {
        fs::write(src.join(format!("d/f{i}.bin")), content(i)).unwrap();
    }
    fs::hard_link(src.join("d/f0.bin"), src.join("link-to-f0")).unwrap();
    fs::write(src.join("small.txt"), b"small\n").unwrap();
    let id = f.backup(&[
        src.to_str().unwrap(),
        "--service",
        "site",
        "--revision",
        "r1",
    ]);
    (f, id)
}

fn packs(f: &Fixture) -> Vec<std::path::PathBuf> {
    let mut v = files_below(&f.repo().join("packs"));
    v.sort();
    v
}

fn flip_middle(p: &Path) {
    let mut b = fs::read(p).unwrap();
    let i = b.len() / 3;
    b[i] ^= 0x01;
    fs::write(p, b).unwrap();
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The lost paths `check --read-data --json` reports, without the leading `/`.
fn damaged_paths(f: &Fixture) -> Vec<String> {
    let out = f.run(&["check", "--read-data", "--json"]);
    assert!(!out.status.success(), "check missed the damage");
    let mut v: Vec<String> = json(&out)["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["affects"].as_array().unwrap().clone())
        .flat_map(|a| a["paths"].as_array().unwrap().clone())
        .map(|p| p.as_str().unwrap().trim_start_matches('/').to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn repair_after_a_damaged_pack_keeps_whole_files_names_lost_ones_and_check_passes() {
    let (f, _) = setup();
    let before = packs(&f);
    assert!(
        before.len() >= 3,
        "want several packs, got {}",
        before.len()
    );
    // Damage a pack that holds file data, not the directory listings (which pack holds
    // what depends on random salts): try each in turn, and undo the damage while check says
    // it took a whole directory (the other repair tests cover that case).
    let mut chosen = None;
    for victim in &before {
        let good = fs::read(victim).unwrap();
        flip_middle(victim);
        let lost = damaged_paths(&f);
        if !lost.is_empty() && !lost.iter().any(|p| p.contains("whole directory")) {
            chosen = Some((victim.clone(), lost));
            break;
        }
        fs::write(victim, good).unwrap();
    }
    let (victim, lost) = chosen.expect("no pack holds only file data");
    let damaged_bytes = fs::read(&victim).unwrap();

    // A dry run changes nothing.
    let out = f.run(&["repair", "index", "--read-data", "--dry-run"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(packs(&f), before, "a dry run moved packs");

    let out = f.run(&["repair", "index", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = json(&out);
    let salvaged = r["salvaged"].as_array().unwrap();
    assert_eq!(salvaged.len(), 1, "{r}");
    assert!(salvaged[0]["lost"].as_u64().unwrap() >= 1, "{r}");
    // Set aside, not deleted: the damaged bytes are kept under damaged/.
    let moved = f.repo().join(salvaged[0]["moved_to"].as_str().unwrap());
    assert!(moved.starts_with(f.repo().join("damaged")));
    assert!(
        fs::read(&moved).unwrap() == damaged_bytes,
        "the set-aside pack is not the damaged file"
    );
    assert!(!victim.exists(), "the damaged pack is still in packs/");

    let out = f.run(&["repair", "snapshots", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let r = json(&out);
    let rw = r["rewritten"].as_array().unwrap();
    assert_eq!(rw.len(), 1, "{r}");
    let mut named: Vec<String> = rw[0]["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().trim_start_matches('/').to_string())
        .collect();
    named.sort();
    // Every file check named is named as lost (a hard link to a lost file goes with it).
    for p in &lost {
        let p = p.trim_start_matches("src/");
        assert!(
            named.iter().any(|n| n.ends_with(p)),
            "{p} not named lost in {named:?}"
        );
    }
    assert_eq!(rw[0]["label"], "site@r1");
    assert_eq!(f.snapshot_ids().len(), 1);
    assert!(
        files_below(&f.repo().join("damaged/snapshots")).len() == 1,
        "the damaged snapshot file was not set aside"
    );

    assert_check_ok(&f, true, "after repair");
    // The repaired snapshot keeps its label: every file not named lost restores exactly.
    let t = f.path("restored");
    assert_ok(&f.run(&["restore", "site@r1", "--target", t.to_str().unwrap()]));
    let mut kept = 0;
    for i in 0..FILES {
        let rel = format!("src/d/f{i}.bin");
        let was_lost = named
            .iter()
            .any(|n| n.ends_with(&format!("d/f{i}.bin")) || n == "src/d/ (the whole directory)");
        match fs::read(t.join(&rel)) {
            Ok(got) => {
                assert!(!was_lost, "{rel} was named lost but restored");
                assert!(got == content(i), "{rel} restored with wrong bytes");
                kept += 1;
            }
            Err(_) => assert!(was_lost, "{rel} is missing but was not named lost"),
        }
    }
    // Whole files survive unless the damage took their directory's listing.
    assert!(
        kept >= 1 || named.iter().any(|n| n == "src/d/ (the whole directory)"),
        "nothing was kept"
    );
    assert_eq!(fs::read(t.join("src/small.txt")).unwrap(), b"small\n");
    let link_lost = named.iter().any(|n| n.contains("link-to-f0"));
    assert_eq!(
        t.join("src/link-to-f0").exists(),
        !link_lost,
        "the hard link's fate does not match the report: lost {named:?}, check said {lost:?}"
    );
    let out = f.run(&["snapshots", "--json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("repaired"),
        "the repaired snapshot is not tagged"
    );
    // A second repair finds nothing to do.
    assert_ok(&f.run(&["repair", "index", "--read-data"]));
    assert_ok(&f.run(&["repair", "snapshots"]));
}

#[test]
fn repair_index_sets_aside_a_pack_whose_table_is_damaged() {
    let (f, id) = setup();
    let victim = packs(&f)[1].clone();
    let mut b = fs::read(&victim).unwrap();
    b.truncate(b.len() - 10);
    fs::write(&victim, b).unwrap();
    let out = f.run(&["repair", "index"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged pack"), "{}", stderr(&out));
    assert!(!victim.exists());
    let out = f.run(&["repair", "snapshots"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Files named lost; or, when the pack held the root's listing, the snapshot set aside.
    let e = stderr(&out);
    assert!(
        e.contains("lost: /") || e.contains("set aside whole"),
        "{e}"
    );
    assert_check_ok(&f, true, "after repair");
    // The original snapshot is gone from the list, its file kept aside.
    assert!(!f.snapshot_ids().contains(&id));
    assert!(f.repo().join(format!("damaged/snapshots/{id}")).exists());
}

#[test]
fn repair_snapshots_sets_aside_an_unreadable_snapshot_file_and_keeps_the_others() {
    let (f, id) = setup();
    let other = f.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o.txt"), b"other\n").unwrap();
    let keep = f.backup(&[other.to_str().unwrap()]);
    let file = f.repo().join(format!("snapshots/{id}"));
    let mut b = fs::read(&file).unwrap();
    let n = b.len();
    b[n - 5] ^= 0x40;
    fs::write(&file, b).unwrap();
    let out = f.run(&["repair", "snapshots"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&id[..8]) && stderr(&out).contains("set aside"),
        "{}",
        stderr(&out)
    );
    assert!(!file.exists());
    assert!(f.repo().join(format!("damaged/snapshots/{id}")).exists());
    assert_eq!(f.snapshot_ids(), vec![keep.clone()]);
    // The data of the set-aside snapshot is unused now; check is clean.
    assert_check_ok(&f, true, "after repair");
}

#[test]
fn repair_of_a_whole_repository_changes_nothing() {
    let (f, id) = setup();
    let before = packs(&f);
    assert_ok(&f.run(&["repair", "index", "--read-data"]));
    assert_ok(&f.run(&["repair", "snapshots"]));
    assert_eq!(packs(&f), before);
    assert_eq!(f.snapshot_ids(), vec![id]);
    assert!(!f.repo().join("damaged").exists());
}
