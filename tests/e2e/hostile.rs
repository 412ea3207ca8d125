//! A repository written by someone who holds the key must not make restore write outside
//! `--target`. Each case builds a snapshot by hand, restores it, and checks both the error
//! and that nothing appeared outside the target.

use std::fs;
use std::path::Path;

use cairn_store::blob::BlobKind;
use cairn_store::repo::{Mode, Repo};
use cairn_store::snapshot::{SNAPSHOT_VERSION, Snapshot, Summary};
use cairn_store::tree::{Entry, Node, Part, Tree};

use crate::support::*;

fn entry(name: &[u8], node: Node) -> Entry {
    Entry {
        name: name.to_vec(),
        node,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        ino: 0,
        size: 5,
        xattrs: Vec::new(),
    }
}

/// Writes `root` (a list of entries, files get the content "pwned") as a snapshot.
fn hostile_snapshot(f: &Fixture, build: impl FnOnce(&Repo, Part) -> Vec<Entry>) -> String {
    let repo = Repo::open(&f.repo(), PASSWORD.as_bytes(), Mode::Write).unwrap();
    let data = repo
        .store_blobs(&[(BlobKind::Data, b"pwned".to_vec())])
        .unwrap();
    let part = Part {
        kind: 0,
        id: data[0],
        len: 5,
    };
    let mut entries = build(&repo, part);
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let tree = Tree { entries }.encode();
    let root = repo.store_blobs(&[(BlobKind::Tree, tree)]).unwrap()[0];
    let snap = Snapshot {
        version: SNAPSHOT_VERSION,
        time_ns: cairn_store::now_ns(),
        hostname: "attacker".into(),
        username: "attacker".into(),
        paths: vec![],
        tree: root,
        service: None,
        revision: None,
        tags: vec![],
        parent: None,
        summary: Summary::default(),
    };
    repo.save_snapshot(&snap).unwrap().to_hex()
}

fn subtree(repo: &Repo, entries: Vec<Entry>) -> cairn_store::BlobId {
    repo.store_blobs(&[(BlobKind::Tree, Tree { entries }.encode())])
        .unwrap()[0]
}

/// Restores into `<tmp>/box/target` and returns the output; asserts `<tmp>/box` holds
/// nothing but `target` afterwards and that no file named `pwned*` exists outside it.
fn restore_boxed(f: &Fixture, id: &str) -> std::process::Output {
    let boxdir = f.path("box");
    fs::create_dir_all(boxdir.join("target")).unwrap();
    let out = f.run(&[
        "restore",
        id,
        "--target",
        boxdir.join("target").to_str().unwrap(),
    ]);
    let names: Vec<_> = fs::read_dir(&boxdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["target"], "restore wrote beside the target");
    assert!(!Path::new("/tmp/cairn-pwned").exists());
    assert!(!f.path("pwned").exists());
    out
}

fn assert_refused(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    let e = stderr(out);
    assert!(
        e.contains("refusing to restore") && e.contains(needle),
        "{e}"
    );
}

#[test]
fn entry_named_dot_dot_is_refused() {
    let f = Fixture::new();
    let id = hostile_snapshot(&f, |_, p| vec![entry(b"..", Node::File(vec![p]))]);
    assert_refused(&restore_boxed(&f, &id), "one path component");
    assert!(files_below(&f.path("box")).is_empty());
}

#[test]
fn absolute_and_traversing_names_are_refused() {
    for name in [
        &b"/tmp/cairn-pwned"[..],
        b"a/../../pwned",
        b"../pwned",
        b"x\0y",
        b"",
        b".",
    ] {
        let f = Fixture::new();
        let id = hostile_snapshot(&f, |_, p| vec![entry(name, Node::File(vec![p]))]);
        assert_refused(&restore_boxed(&f, &id), "one path component");
        assert!(files_below(&f.path("box")).is_empty(), "{name:?}");
    }
}

#[test]
fn duplicate_names_symlink_then_directory_are_refused() {
    // A symlink "d" to outside, then a directory "d" whose file would land through it.
    let f = Fixture::new();
    let outside = f.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let id = hostile_snapshot(&f, |repo, p| {
        let sub = subtree(repo, vec![entry(b"pwned", Node::File(vec![p]))]);
        vec![
            entry(
                b"d",
                Node::Symlink(outside.to_str().unwrap().as_bytes().to_vec()),
            ),
            Entry {
                mode: 0o40755,
                ..entry(b"d", Node::Dir(sub))
            },
        ]
    });
    assert_refused(&restore_boxed(&f, &id), "appears twice");
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing may be written through the link"
    );
}

#[test]
fn a_symlink_already_in_the_target_is_not_followed() {
    let f = Fixture::new();
    let outside = f.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let id = hostile_snapshot(&f, |repo, p| {
        let sub = subtree(repo, vec![entry(b"pwned", Node::File(vec![p]))]);
        vec![Entry {
            mode: 0o40755,
            ..entry(b"d", Node::Dir(sub))
        }]
    });
    let target = f.path("box/target");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("d")).unwrap();
    let out = restore_boxed(&f, &id);
    assert_ok(&out);
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "the existing link was followed"
    );
    assert!(fs::symlink_metadata(target.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("d/pwned")).unwrap(), b"pwned");
}

#[test]
fn hard_links_out_of_the_tree_are_refused_or_skipped() {
    // A path with '..' is refused outright.
    let f = Fixture::new();
    let id = hostile_snapshot(&f, |_, _| {
        vec![entry(
            b"h",
            Node::HardLink(vec![b"..".to_vec(), b"etc".to_vec()]),
        )]
    });
    assert_refused(&restore_boxed(&f, &id), "hard link target");
    // A plain path to a file this restore did not write (e.g. /etc/passwd) is not linked.
    let f = Fixture::new();
    let id = hostile_snapshot(&f, |_, _| {
        vec![entry(
            b"h",
            Node::HardLink(vec![b"etc".to_vec(), b"passwd".to_vec()]),
        )]
    });
    let out = restore_boxed(&f, &id);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not write"), "{}", stderr(&out));
    assert!(files_below(&f.path("box")).is_empty());
    assert!(!f.path("box/target/h").exists());
}

#[test]
fn device_nodes_are_not_created() {
    let f = Fixture::new();
    let id = hostile_snapshot(&f, |_, _| {
        vec![
            Entry {
                mode: 0o60660,
                ..entry(b"sda", Node::BlockDevice(0x0800))
            },
            Entry {
                mode: 0o20666,
                ..entry(b"mem", Node::CharDevice(0x0101))
            },
        ]
    });
    let out = restore_boxed(&f, &id);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("device node not restored"),
        "{}",
        stderr(&out)
    );
    assert!(fs::read_dir(f.path("box/target")).unwrap().next().is_none());
}
