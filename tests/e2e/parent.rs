//! The parent snapshot: files unchanged since it (same size, mtime, ctime and inode) keep
//! their chunks without being read, anything else is read again, and a large file that
//! changed is stored as delta runs against its version there.

use std::fs;
use std::path::Path;

use crate::support::*;

fn backup_json(f: &Fixture, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    let out = f.run(&all);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unchanged(v: &serde_json::Value) -> u64 {
    v["summary"]["unchanged_files"].as_u64().unwrap_or(0)
}

fn restore_and_compare(f: &Fixture, id: &str, src: &Path, name: &str) {
    let target = f.path(&format!("restored-{}", &id[..8]));
    let out = f.run(&["restore", id, "--target", target.to_str().unwrap()]);
    assert_ok(&out);
    for p in files_below(src) {
        let rel = p.strip_prefix(src).unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            fs::read(target.join(name).join(rel)).unwrap(),
            "{} differs after restore",
            rel.display()
        );
    }
}

fn tree(f: &Fixture, n: usize) -> std::path::PathBuf {
    let src = f.path("site");
    fs::create_dir_all(src.join("files")).unwrap();
    for i in 0..n {
        fs::write(
            src.join(format!("files/f{i}")),
            pseudo_data(50_000, i as u64),
        )
        .unwrap();
    }
    src
}

/// Files changed less than 2 s before a backup started are read again by the next one
/// (their times may not tell a change that follows within the same clock tick).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(2_100));
}

#[test]
fn unchanged_files_keep_their_chunks_without_being_read() {
    let f = Fixture::new();
    let src = tree(&f, 20);
    let s = src.to_str().unwrap();
    settle();
    let first = backup_json(&f, &[s]);
    assert_eq!(unchanged(&first), 0);

    let again = backup_json(&f, &[s]);
    assert_eq!(unchanged(&again), 20, "{again}");
    assert_eq!(again["summary"]["new_blobs"], 0, "{again}");
    assert_eq!(again["summary"]["bytes"], first["summary"]["bytes"]);

    let mut extra = fs::OpenOptions::new()
        .append(true)
        .open(src.join("files/f3"))
        .unwrap();
    std::io::Write::write_all(&mut extra, b"one more line\n").unwrap();
    drop(extra);
    let changed = backup_json(&f, &[s]);
    assert_eq!(unchanged(&changed), 19, "{changed}");
    restore_and_compare(&f, changed["id"].as_str().unwrap(), &src, "site");

    let forced = backup_json(&f, &["--force", s]);
    assert_eq!(unchanged(&forced), 0, "--force reads every file: {forced}");
    assert_eq!(forced["summary"]["files"], 20);
}

#[test]
fn a_file_rewritten_with_its_old_size_and_mtime_is_read_again() {
    let f = Fixture::new();
    let src = tree(&f, 5);
    let s = src.to_str().unwrap();
    settle();
    backup_json(&f, &[s]);
    // Same length, other bytes, and the old mtime put back: only the ctime tells.
    let p = src.join("files/f2");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    fs::write(&p, pseudo_data(50_000, 999)).unwrap();
    fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), mtime);
    let next = backup_json(&f, &[s]);
    assert_eq!(unchanged(&next), 4, "{next}");
    restore_and_compare(&f, next["id"].as_str().unwrap(), &src, "site");
}

#[test]
fn files_changed_just_before_the_parent_are_read_again() {
    let f = Fixture::new();
    let src = tree(&f, 5);
    let s = src.to_str().unwrap();
    // No pause: every file changed within the clock's reach of the first backup.
    backup_json(&f, &[s]);
    let next = backup_json(&f, &[s]);
    assert_eq!(unchanged(&next), 0, "{next}");
    // Once they have settled, they are trusted.
    settle();
    backup_json(&f, &[s]);
    let later = backup_json(&f, &[s]);
    assert_eq!(unchanged(&later), 5, "{later}");
}

#[test]
fn a_changed_large_file_in_a_tree_is_stored_as_delta_runs() {
    let f = Fixture::new();
    let src = f.path("data");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big.sql");
    let s = src.to_str().unwrap();
    fs::write(&big, crate::delta::dump(0, 100_000)).unwrap();
    let first = backup_json(&f, &[s]);
    fs::write(&big, crate::delta::dump(1, 100_000)).unwrap();
    let second = backup_json(&f, &[s]);
    let (a, b) = (
        first["summary"]["added_bytes"].as_u64().unwrap(),
        second["summary"]["added_bytes"].as_u64().unwrap(),
    );
    assert!(b * 8 < a, "the new version added {b} bytes, the first {a}");
    let out = f.run(&["stats", "--json"]);
    assert_ok(&out);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["repository"]["delta_runs"].as_u64().unwrap() > 0, "{st}");
    restore_and_compare(&f, second["id"].as_str().unwrap(), &src, "data");
    // The base version is still whole.
    let t = f.path("first");
    let id = first["id"].as_str().unwrap();
    assert_ok(&f.run(&["restore", id, "--target", t.to_str().unwrap()]));
    assert_eq!(
        fs::read(t.join("data/big.sql")).unwrap(),
        crate::delta::dump(0, 100_000)
    );
}

#[test]
fn a_damaged_parent_snapshot_does_not_stop_the_next_backup() {
    let f = Fixture::new();
    let src = tree(&f, 3);
    let s = src.to_str().unwrap();
    // Old enough files: with a readable parent, all three would be found unchanged.
    settle();
    let first = backup_json(&f, &[s]);
    let id = first["id"].as_str().unwrap();
    let file = f.repo().join("snapshots").join(id);
    let mut bytes = fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&file, bytes).unwrap();
    // The damaged snapshot cannot be the parent; the backup reads everything and succeeds.
    let next = backup_json(&f, &[s]);
    assert_eq!(unchanged(&next), 0, "{next}");
    let next_id = next["id"].as_str().unwrap();
    assert_eq!(parent_of(&f, next_id), None, "no parent is named");
    restore_and_compare(&f, next_id, &src, "site");
    // The one after has a readable parent again, and reads nothing.
    settle();
    let third = backup_json(&f, &[s]);
    assert_eq!(unchanged(&third), 3, "{third}");
    assert_eq!(
        parent_of(&f, third["id"].as_str().unwrap()).as_deref(),
        Some(next_id)
    );
    // `snapshots` names the damaged file, lists the two others, and exits 3.
    let listed = names_damaged(
        &f,
        "snapshots",
        &format!("snapshot {} is not listed", &id[..8]),
    );
    assert!(listed.contains("2 snapshots"), "{listed}");
    // So does `stats`, over the two it can read.
    let counted = names_damaged(
        &f,
        "stats",
        &format!("snapshot {} is not counted", &id[..8]),
    );
    assert!(counted.contains(&next_id[..8]), "{counted}");
}

/// Runs `command`, which must exit 3 and say `says` on stderr; its standard output.
fn names_damaged(f: &Fixture, command: &str, says: &str) -> String {
    let out = f.run(&[command]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(says), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The parent a snapshot names, from `snapshots --json` (which lists the readable snapshots
/// and exits 3 when one is damaged).
fn parent_of(f: &Fixture, id: &str) -> Option<String> {
    let out = f.run(&["snapshots", "--json"]);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let snap = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} is listed"))
        .clone();
    snap["parent"].as_str().map(str::to_string)
}
