//! Damaged repositories: truncated, zeroed, bit-flipped and swapped files of every kind, and a
//! damaged index. Each gives a clear error that names what is damaged, never a panic, and
//! never a wrong byte in a restore.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::*;

#[derive(Clone, Copy, Debug)]
enum Damage {
    Truncate,
    Zero,
    Flip,
}

fn damage(p: &Path, how: Damage) {
    let mut b = fs::read(p).unwrap();
    match how {
        Damage::Truncate => b.truncate(b.len() / 2),
        Damage::Zero => b.iter_mut().for_each(|x| *x = 0),
        Damage::Flip => {
            let i = b.len() / 2;
            b[i] ^= 0x10;
        }
    }
    fs::write(p, b).unwrap();
}

/// A repository with one snapshot of a known tree; returns it and the snapshot id.
fn setup() -> (Fixture, String) {
    let f = Fixture::new();
    let src = f.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), pseudo_data(300_000, 1)).unwrap();
    fs::write(src.join("b.txt"), b"hello\n").unwrap();
    let id = f.backup(&[src.to_str().unwrap()]);
    (f, id)
}

fn one(dir: &Path) -> PathBuf {
    let mut v = files_below(dir);
    v.sort();
    v.into_iter().next().unwrap()
}

/// Runs restore, snapshots and check; asserts no panic (exit 101), a failure, a message
/// naming `what`, and that whatever was restored is byte-for-byte right.
fn assert_clear_failure(f: &Fixture, id: &str, what: &str, case: &str) {
    let target = f.path(&format!("restore-{case}"));
    let runs = [
        f.run(&["restore", id, "--target", target.to_str().unwrap()]),
        f.run(&["check", "--read-data"]),
    ];
    for out in &runs {
        assert_ne!(
            out.status.code(),
            Some(101),
            "{case}: panic: {}",
            stderr(out)
        );
        assert!(!out.status.success(), "{case}: damage went unnoticed");
        let e = stderr(out).to_lowercase();
        assert!(
            e.contains(what),
            "{case}: the error does not name the {what}: {e}"
        );
    }
    for (name, want) in [
        ("src/a.bin", pseudo_data(300_000, 1)),
        ("src/b.txt", b"hello\n".to_vec()),
    ] {
        if let Ok(got) = fs::read(target.join(name)) {
            assert_eq!(got, want, "{case}: {name} was restored with wrong bytes");
        }
    }
}

#[test]
fn damaged_packs_are_named_and_never_restore_wrong_bytes() {
    for how in [Damage::Truncate, Damage::Zero, Damage::Flip] {
        let (f, id) = setup();
        damage(&one(&f.repo().join("packs")), how);
        assert_clear_failure(&f, &id, "pack", &format!("pack-{how:?}"));
    }
}

#[test]
fn swapped_packs_are_detected() {
    let (f, id) = setup();
    let src = f.path("src2");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("c.bin"), pseudo_data(200_000, 9)).unwrap();
    f.backup(&[src.to_str().unwrap()]);
    let mut packs = files_below(&f.repo().join("packs"));
    packs.sort();
    assert_eq!(packs.len(), 2);
    let (a, b) = (fs::read(&packs[0]).unwrap(), fs::read(&packs[1]).unwrap());
    fs::write(&packs[0], &b).unwrap();
    fs::write(&packs[1], &a).unwrap();
    assert_clear_failure(&f, &id, "pack", "swapped");
}

#[test]
fn damaged_snapshot_files_are_named() {
    for how in [Damage::Truncate, Damage::Zero, Damage::Flip] {
        let (f, id) = setup();
        damage(&one(&f.repo().join("snapshots")), how);
        let out = f.run(&["snapshots"]);
        assert_ne!(out.status.code(), Some(101));
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("snapshot"),
            "{how:?}: {}",
            stderr(&out)
        );
        assert_clear_failure(&f, &id, "snapshot", &format!("snapshot-{how:?}"));
    }
}

#[test]
fn damaged_config_is_named() {
    for how in [Damage::Truncate, Damage::Zero, Damage::Flip] {
        let (f, id) = setup();
        damage(&f.repo().join("config"), how);
        assert_clear_failure(&f, &id, "config", &format!("config-{how:?}"));
    }
}

#[test]
fn damaged_key_file_reads_as_wrong_password_or_damage_never_a_panic() {
    for how in [Damage::Truncate, Damage::Zero, Damage::Flip] {
        let (f, _) = setup();
        damage(&one(&f.repo().join("keys")), how);
        let out = f.run(&["snapshots"]);
        assert_ne!(out.status.code(), Some(101), "{how:?}");
        // AEAD cannot tell a flipped tag from a wrong password; a mangled header is damage.
        let e = stderr(&out);
        assert!(
            out.status.code() == Some(12) && e.contains("wrong password") && e.contains("key"),
            "{how:?}: {e}"
        );
    }
}

#[test]
fn a_damaged_index_says_so_and_rebuild_repairs_it() {
    let (f, id) = setup();
    for p in files_below(&f.repo().join("index")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("MANIFEST") || name == "CURRENT" {
            damage(&p, Damage::Zero);
        }
    }
    let out = f.run(&["restore", &id, "--target", f.path("x").to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(101));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("index rebuild"), "{}", stderr(&out));
    assert_ok(&f.run(&["index", "rebuild"]));
    let t = f.path("after");
    assert_ok(&f.run(&["restore", &id, "--target", t.to_str().unwrap()]));
    assert_eq!(
        fs::read(t.join("src/a.bin")).unwrap(),
        pseudo_data(300_000, 1)
    );
}
