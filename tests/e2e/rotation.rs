//! `key rotate`: data written after a rotation is sealed under a new key generation that a
//! former key holder cannot open; older data stays readable; `prune --reseal` seals it anew.

use std::fs;
use std::path::Path;

use crate::support::*;

/// The key generation in the header of a sealed file (bytes 12..16).
fn generation(p: &Path) -> u32 {
    let b = fs::read(p).unwrap();
    u32::from_le_bytes(b[12..16].try_into().unwrap())
}

fn generations_below(dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = files_below(dir).iter().map(|p| generation(p)).collect();
    v.sort();
    v
}

#[test]
fn after_key_rotate_new_data_is_sealed_under_a_key_the_old_key_file_lacks() {
    let f = Fixture::new();
    let src = f.path("a");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("old.bin"), pseudo_data(400_000, 1)).unwrap();
    let old_snap = f.backup(&[src.to_str().unwrap()]);
    assert_eq!(generations_below(&f.repo().join("packs")), vec![0]);
    // A second password: its key file is what a former key holder keeps a copy of.
    let mine = files_below(&f.repo().join("keys"));
    let out = f
        .cmd(&["key", "add"])
        .env("CAIRN_NEW_PASSWORD", "former")
        .output()
        .unwrap();
    assert_ok(&out);
    let keys_before: Vec<_> = files_below(&f.repo().join("keys"));
    assert_eq!(keys_before.len(), 2);
    let stolen: Vec<(std::path::PathBuf, Vec<u8>)> = keys_before
        .iter()
        .filter(|p| !mine.contains(p))
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    assert_eq!(stolen.len(), 1);

    // Other key files cannot get the new generation: refused unless removed.
    let out = f.run(&["key", "rotate"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--remove-other-keys"),
        "{}",
        stderr(&out)
    );
    assert_eq!(files_below(&f.repo().join("keys")).len(), 2);

    let out = f.run(&["key", "rotate", "--remove-other-keys"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("generation 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let keys_after = files_below(&f.repo().join("keys"));
    assert_eq!(keys_after.len(), 1);
    assert!(
        !keys_before.contains(&keys_after[0]),
        "the key file was not replaced"
    );
    // The removed password no longer opens the repository.
    let out = f
        .cmd(&["snapshots"])
        .env("CAIRN_PASSWORD", "former")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12));

    // New data: generation 1, in packs and in the snapshot file.
    let src2 = f.path("b");
    fs::create_dir_all(&src2).unwrap();
    fs::write(src2.join("new.bin"), pseudo_data(400_000, 2)).unwrap();
    let new_snap = f.backup(&[src2.to_str().unwrap()]);
    let gens = generations_below(&f.repo().join("packs"));
    assert!(
        gens.contains(&0) && gens.contains(&1),
        "packs of generations {gens:?}"
    );
    assert_eq!(
        generation(&f.repo().join(format!("snapshots/{new_snap}"))),
        1
    );
    // Both generations restore with the current key file.
    assert_check_ok(&f, true, "after rotation");
    for (id, name, seed) in [(&old_snap, "a/old.bin", 1), (&new_snap, "b/new.bin", 2)] {
        let t = f.path(&format!("t-{seed}"));
        assert_ok(&f.run(&["restore", id, "--target", t.to_str().unwrap()]));
        assert_eq!(fs::read(t.join(name)).unwrap(), pseudo_data(400_000, seed));
    }

    // A former key holder puts their old key file back: old data opens, new data does not.
    for (p, b) in &stolen {
        fs::write(p, b).unwrap();
    }
    let former = |args: &[&str]| {
        f.cmd(args)
            .env("CAIRN_PASSWORD", "former")
            .output()
            .unwrap()
    };
    let t = f.path("former-old");
    assert_ok(&former(&[
        "restore",
        &old_snap,
        "--target",
        t.to_str().unwrap(),
    ]));
    let out = former(&[
        "restore",
        &new_snap,
        "--target",
        f.path("former-new").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(101));
    assert!(
        stderr(&out).contains("key generation 1"),
        "{}",
        stderr(&out)
    );
    assert!(
        !f.path("former-new").join("b/new.bin").exists(),
        "bytes of the new generation were restored with the old key"
    );

    // prune --reseal seals the old data anew: afterwards the old key file opens no data.
    let out = f.run(&["prune", "--reseal", "--json"]);
    assert_ok(&out);
    let gens = generations_below(&f.repo().join("packs"));
    assert!(
        gens.iter().all(|g| *g == 1),
        "packs of generations {gens:?}"
    );
    let out = former(&[
        "restore",
        &old_snap,
        "--target",
        f.path("former-2").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("key generation 1"),
        "{}",
        stderr(&out)
    );
    // The holder of the current key still restores everything, and a new password added
    // after the rotation gets the generation key too.
    assert_check_ok(&f, true, "after reseal");
    let out = f
        .cmd(&["key", "add"])
        .env("CAIRN_NEW_PASSWORD", "later")
        .output()
        .unwrap();
    assert_ok(&out);
    for (p, _) in &stolen {
        fs::remove_file(p).unwrap();
    }
    let t = f.path("later");
    let out = f
        .cmd(&["restore", &old_snap, "--target", t.to_str().unwrap()])
        .env("CAIRN_PASSWORD", "later")
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        fs::read(t.join("a/old.bin")).unwrap(),
        pseudo_data(400_000, 1)
    );
}
