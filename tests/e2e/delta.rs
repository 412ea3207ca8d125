//! Delta runs: new versions of a dump are stored as zstd deltas against the previous one,
//! restore exactly, survive forget and prune of the versions they are based on, and damage
//! to them is named, never restored as wrong bytes.

use std::fs;

use crate::support::*;

/// A SQL-dump-like text of `rows` rows; `rev` changes a scattered few of them (as an OLTP
/// load does between two dumps) and adds some at the end.
pub fn dump(rev: u64, rows: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"-- dump\nCREATE TABLE t (id INT, name TEXT, n INT);\n");
    for i in 0..rows + rev * 50 {
        // Row i was last changed in the newest revision r <= rev with i % 97 == r % 97.
        let changed = (0..=rev).rev().find(|r| i % 97 == r * 13 % 97).unwrap_or(0);
        out.extend_from_slice(
            format!(
                "INSERT INTO t VALUES ({i},'customer-{}-{}',{});\n",
                i * 7919 % 10007,
                changed,
                (i * 31 + changed * 1_000_003) % 100_000
            )
            .as_bytes(),
        );
    }
    out
}

/// `backup` of `data` from standard input as `db.sql` of service `db`, revision `rev`
/// (with `--json`), ready to run.
pub fn dump_backup(f: &Fixture, data: &[u8], rev: &str) -> std::process::Command {
    let p = f.path(&format!("dump-{rev}.sql"));
    fs::write(&p, data).unwrap();
    let mut c = f.cmd(&[
        "backup",
        "--stdin",
        "--stdin-name",
        "db.sql",
        "--service",
        "db",
        "--revision",
        rev,
        "--json",
    ]);
    c.stdin(fs::File::open(&p).unwrap());
    c
}

pub fn backup_dump(f: &Fixture, data: &[u8], rev: &str) -> serde_json::Value {
    let out = dump_backup(f, data, rev).output().unwrap();
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The bytes backing up `data` as revision `rev` added to the repository.
fn added(f: &Fixture, data: &[u8], rev: &str) -> u64 {
    backup_dump(f, data, rev)["summary"]["added_bytes"]
        .as_u64()
        .unwrap()
}

fn dumped(f: &Fixture, spec: &str) -> std::process::Output {
    f.run(&["dump", spec, "db.sql"])
}

/// Asserts that revision `rN` of service `db` dumps back as `revs[N]`, for every N.
fn assert_revisions_exact(f: &Fixture, revs: &[Vec<u8>]) {
    assert_dumps_exact(f, revs.iter().enumerate(), "");
}

/// Asserts that revision `rN` of service `db` dumps back as `want`, for each (N, want);
/// `what` leads the message.
pub fn assert_dumps_exact<'a>(
    f: &Fixture,
    revs: impl IntoIterator<Item = (usize, &'a Vec<u8>)>,
    what: &str,
) {
    for (r, want) in revs {
        let out = dumped(f, &format!("db@r{r}"));
        assert_ok(&out);
        assert!(
            out.stdout == *want,
            "{what}revision {r} came back different"
        );
    }
}

/// The delta runs the index knows, each once.
fn run_ids(repo: &cairn_store::repo::Repo) -> Vec<cairn_store::id::BlobId> {
    let mut ids = Vec::new();
    repo.index()
        .for_each_member(|_, run| {
            if !ids.contains(run) {
                ids.push(*run)
            }
        })
        .unwrap();
    ids
}

fn stats(f: &Fixture) -> serde_json::Value {
    let out = f.run(&["stats", "--json"]);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

const ROWS: u64 = 60_000;

/// Three revisions of a 3.6 MB dump; returns the fixture and each revision's bytes.
fn three_revisions(f: &Fixture) -> Vec<Vec<u8>> {
    let revs: Vec<Vec<u8>> = (0..3).map(|r| dump(r, ROWS)).collect();
    let mut added = Vec::new();
    for (r, d) in revs.iter().enumerate() {
        added.push(self::added(f, d, &format!("r{r}")));
    }
    // Each new revision costs a small part of the first: its changes, not its chunks.
    for r in 1..3 {
        assert!(
            added[r] * 8 < added[0],
            "revision {r} added {} bytes, the first {}",
            added[r],
            added[0]
        );
    }
    revs
}

#[test]
fn dump_revisions_are_stored_as_delta_runs_and_restore_exactly() {
    let f = Fixture::new();
    let revs = three_revisions(&f);
    let s = stats(&f);
    assert!(s["repository"]["delta_runs"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["repository"]["max_chain_depth"].as_u64().unwrap() >= 2,
        "{s}"
    );
    // A few rows change between revisions: each run is read through the runs below it.
    assert_eq!(
        s["repository"]["max_read_levels"], s["repository"]["max_chain_depth"],
        "{s}"
    );
    assert_revisions_exact(&f, &revs);
    assert_check_ok(&f, true, "with delta runs");
    // The index is a cache: rebuilt from the packs, it finds the chunks inside runs again.
    assert_ok(&f.run(&["index", "rebuild"]));
    let out = dumped(&f, "db@r2");
    assert_ok(&out);
    assert!(out.stdout == revs[2]);
}

/// Text of `n` bytes, the same for the same `seed`, that chunks into several chunks.
fn block(seed: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut x = seed | 1;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("INSERT INTO b VALUES ({x},'{}');\n", x % 9973).as_bytes());
    }
    out.truncate(n);
    out
}

#[test]
fn a_run_after_a_block_the_dump_repeats_is_put_against_the_nearest_copy() {
    // The same block (a table copied whole, say) at two places: its chunks occur twice in
    // the parent. The run after the second must be put against what follows the second.
    let f = Fixture::new();
    let repeated = block(7, 2 << 20);
    let version = |rev: u64, second: &[u8]| {
        let mut d = block(1, 1 << 20);
        d.extend_from_slice(&repeated);
        d.extend_from_slice(&block(2, 3 << 20));
        d.extend_from_slice(second);
        // Rows after it change (one in 97), so the chunks after the block are new.
        let rows = dump(rev, 50_000);
        d.extend_from_slice(&rows[..rows.len().min(3 << 20)]);
        d
    };
    let (r0, r1) = (version(0, &repeated), version(1, &repeated));
    let first = added(&f, &r0, "r0");
    let next = added(&f, &r1, "r1");
    assert!(
        next * 10 < first,
        "the next version added {next} bytes, the first {first}"
    );
    let out = dumped(&f, "db@r1");
    assert_ok(&out);
    assert!(out.stdout == r1, "r1 came back different");
    // The parent may hold the block's last chunk only in its first copy (its second copy
    // ended differently): the run after the second is still put against what follows it.
    let mut ending = repeated.clone();
    let n = ending.len();
    ending[n - (200 << 10)..].copy_from_slice(&block(9, 200 << 10));
    let (r2, r3) = (version(2, &ending), version(3, &repeated));
    let first = added(&f, &r2, "r2");
    let next = added(&f, &r3, "r3");
    assert!(
        next * 10 < r3.len() as u64 / 4,
        "the next version added {next} bytes (the one before {first})"
    );
    let out = dumped(&f, "db@r3");
    assert_ok(&out);
    assert!(out.stdout == r3, "r3 came back different");
}

/// A dump in which every row changes in every revision (a counter in each, as a table of
/// sessions or statistics has).
pub fn dense_dump(rev: u64, rows: u64) -> Vec<u8> {
    let mut out = b"-- dump\nCREATE TABLE s (id INT, hits INT, note TEXT);\n".to_vec();
    for i in 0..rows {
        out.extend_from_slice(
            format!(
                "INSERT INTO s VALUES ({i},{},'customer {} of region {} since {} on plan {}');\n",
                (i * 2_654_435_761 + rev * 40_503) % 1_000_000_007,
                i * 7919 % 10007,
                i % 97,
                2000 + i % 25,
                ["basic", "plus", "pro"][i as usize % 3]
            )
            .as_bytes(),
        );
    }
    out
}

#[test]
fn a_run_over_a_dense_run_is_based_on_what_that_run_was_based_on() {
    let f = Fixture::new();
    let revs: Vec<Vec<u8>> = (0..5).map(|r| dense_dump(r, 80_000)).collect();
    let mut added: Vec<u64> = revs[..4]
        .iter()
        .enumerate()
        .map(|(r, d)| self::added(&f, d, &format!("r{r}")))
        .collect();
    // Reading r3 goes through one run, not three, yet the depth still counts revisions (so
    // the chain still ends at `chain_max`)...
    let s = stats(&f);
    assert_eq!(s["repository"]["max_chain_depth"], 3, "{s}");
    assert_eq!(s["repository"]["max_read_levels"], 1, "{s}");
    // ...and a run reaches back three revisions at most: r4 is based on r3.
    added.push(self::added(&f, &revs[4], "r4"));
    let s = stats(&f);
    assert_eq!(s["repository"]["max_chain_depth"], 4, "{s}");
    assert_eq!(s["repository"]["max_read_levels"], 2, "{s}");
    // Each revision still costs a fraction of the first.
    for r in 1..5 {
        assert!(
            added[r] * 3 < added[0],
            "revision {r} added {} bytes, the first {}",
            added[r],
            added[0]
        );
    }
    assert_revisions_exact(&f, &revs);
    assert_check_ok(&f, true, "with dense runs");
    // Prune keeps the bases the runs name, though the runs between are gone.
    assert_ok(&f.run(&["forget", "db@r1", "db@r2", "--prune", "--max-unused", "0"]));
    for r in [3, 4] {
        let out = dumped(&f, &format!("db@r{r}"));
        assert_ok(&out);
        assert!(out.stdout == revs[r], "r{r} lost bytes after prune");
    }
    assert_check_ok(&f, true, "with dense runs, after prune");
}

/// What the delta runs of a repository of revisions `r0`, `r1`... read.
struct Reaches {
    /// For each base a run takes that is not a chunk of the version before its own (those a
    /// run over a dense run takes from that run's bases): the run's revision less the last
    /// revision whose dump held that base.
    skipped: Vec<usize>,
    /// Bases that are chunks of the version before.
    ordinary: usize,
    /// Runs that take bases of both kinds.
    mixed: usize,
}

/// The chunks of each revision's dump (`r0`, `r1`... by number), and for each delta run its
/// revision (the first dump holding its chunks, which are new there) and the bases it takes.
type Runs = (
    Vec<std::collections::HashSet<cairn_store::id::BlobId>>,
    Vec<(usize, Vec<cairn_store::id::BlobId>)>,
);

fn runs_by_revision(f: &Fixture) -> Runs {
    use cairn_store::repo::{Mode, Repo};
    use cairn_store::tree::Node;
    let repo = Repo::open(&f.repo(), PASSWORD.as_bytes(), Mode::Read).unwrap();
    let mut chunks: Vec<std::collections::HashSet<_>> = Vec::new();
    for (_, snap) in repo.snapshots().unwrap() {
        let rev: usize = snap.revision.unwrap()[1..].parse().unwrap();
        let tree = repo.load_tree(&snap.tree).unwrap();
        let Node::File(parts) = &tree.entries[0].node else {
            panic!("a dump is a file")
        };
        chunks.resize(chunks.len().max(rev + 1), Default::default());
        chunks[rev] = parts.iter().map(|p| p.id).collect();
    }
    let runs = run_ids(&repo)
        .iter()
        .map(|run| {
            let h = repo.run_header(run).unwrap();
            let rev = (0..chunks.len())
                .find(|r| chunks[*r].contains(&h.members[0].0))
                .expect("a run's chunk in some dump");
            let taken = cairn_store::delta::prefix_plan(&h.bases, h.skip, h.prefix_len)
                .into_iter()
                .map(|(i, _)| h.bases[i].0)
                .collect();
            (rev, taken)
        })
        .collect();
    (chunks, runs)
}

fn skipped_reaches(f: &Fixture) -> Reaches {
    let (chunks, runs) = runs_by_revision(f);
    let mut out = Reaches {
        skipped: Vec::new(),
        ordinary: 0,
        mixed: 0,
    };
    for (rev, taken) in runs {
        let before = rev.checked_sub(1).expect("no run in the first revision");
        let (mut skipped, mut ordinary) = (0, 0);
        for base in &taken {
            if chunks[before].contains(base) {
                ordinary += 1;
            } else {
                let last = (0..before).rev().find(|r| chunks[*r].contains(base));
                out.skipped
                    .push(rev - last.expect("a base from some older revision"));
                skipped += 1;
            }
        }
        out.ordinary += ordinary;
        out.mixed += (skipped > 0 && ordinary > 0) as usize;
    }
    out
}

#[test]
fn a_dense_table_beside_a_sparse_one_reaches_back_three_revisions_at_most() {
    // A dense table a little longer than a run, then a table changing a row every few KB:
    // a run then spans the end of the one and the start of the other, its prefix a dense
    // piece (which may skip revisions) beside a sparse one (which does not).
    let version = |rev: u64| {
        let mut d = dense_dump(rev, 95_000);
        d.extend_from_slice(&dump(rev, 70_000));
        d
    };
    let revs: Vec<Vec<u8>> = (0..6).map(version).collect();
    // Where runs start depends on the repository's chunking key: in about one repository in
    // six no run spans both tables. A fresh one is tried then, four at most.
    for attempt in 1..=4 {
        let f = Fixture::new();
        for (r, d) in revs.iter().enumerate() {
            backup_dump(&f, d, &format!("r{r}"));
        }
        // Counted on the bases each dense piece takes (however deep the sparse pieces
        // beside it are chained): a run over a dense run reads its bases at most three
        // revisions back.
        let Reaches {
            skipped,
            ordinary,
            mixed,
        } = skipped_reaches(&f);
        assert!(ordinary > 0, "no run over its parent");
        assert!(skipped.iter().all(|r| (2..=3).contains(r)), "{skipped:?}");
        assert!(
            skipped.contains(&3),
            "no dense piece reached three back: {skipped:?}"
        );
        assert_revisions_exact(&f, &revs);
        assert_check_ok(&f, true, "with dense and sparse pieces");
        if mixed > 0 {
            return;
        }
        eprintln!("attempt {attempt}: no run over both a dense and a sparse stretch");
    }
    panic!("in four repositories no run was over both a dense and a sparse stretch");
}

#[test]
fn a_base_recorded_inside_its_own_run_keeps_that_run_from_being_skipped() {
    use cairn_store::repo::{Mode, Repo};
    let f = Fixture::new();
    let revs: Vec<Vec<u8>> = (0..3).map(|r| dense_dump(r, 35_000)).collect();
    for (r, d) in revs[..2].iter().enumerate() {
        backup_dump(&f, d, &format!("r{r}"));
    }
    let damaged = {
        let repo = Repo::open(&f.repo(), PASSWORD.as_bytes(), Mode::Write).unwrap();
        let runs = run_ids(&repo);
        assert_eq!(runs.len(), 1, "one run");
        let h = repo.run_header(&runs[0]).unwrap();
        // A base from the middle of its prefix, which a run over this one would take.
        let plan = cairn_store::delta::prefix_plan(&h.bases, h.skip, h.prefix_len);
        let (i, _) = plan[plan.len() / 2].clone();
        // A damaged member record (the index is not authenticated): a base of the run is
        // recorded as a member of the run itself, a loop for anything that follows bases
        // down. It once overflowed the stack of the next backup.
        repo.index().add_members(&runs[0], &[h.bases[i]]).unwrap();
        h.bases[i].0
    };
    // Stored, not crashed: the damaged run looks no deeper than that base, so the part of
    // it holding the base is not skipped (no new run takes the base, a chunk of r0), and
    // nothing follows bases down through it.
    backup_dump(&f, &revs[2], "r2");
    let (_, runs) = runs_by_revision(&f);
    let of_r2: Vec<&Vec<_>> = runs
        .iter()
        .filter(|(r, _)| *r == 2)
        .map(|(_, t)| t)
        .collect();
    assert!(!of_r2.is_empty(), "r2 stored no run");
    assert!(
        of_r2.iter().all(|taken| !taken.contains(&damaged)),
        "a run over the damaged one was based on what it was based on"
    );
    // Every revision comes back exact, with the damaged record and after a rebuild.
    assert_revisions_exact(&f, &revs);
    assert_ok(&f.run(&["index", "rebuild"]));
    assert_revisions_exact(&f, &revs);
}

#[test]
fn a_dump_much_longer_than_its_parent_is_stored_as_chunks_past_the_parents_end() {
    let f = Fixture::new();
    let (small, large) = (dump(0, 20_000), dump(1, 200_000));
    backup_dump(&f, &small, "r0");
    backup_dump(&f, &large, "r1");
    // Past the parent's end a run would be literals only: those chunks are stored whole,
    // and only about the parent's length goes into runs.
    let s = stats(&f);
    let in_runs = s["repository"]["delta_run_bytes"].as_u64().unwrap();
    assert!(
        in_runs < 3 * small.len() as u64,
        "{in_runs} bytes in runs for a parent of {} and a dump of {}",
        small.len(),
        large.len()
    );
    let out = dumped(&f, "db@r1");
    assert_ok(&out);
    assert!(out.stdout == large, "r1 came back different");
    assert_check_ok(&f, true, "with a dump longer than its parent");
}

#[test]
fn forget_and_prune_keep_the_bases_delta_runs_need() {
    let f = Fixture::small_packs();
    let revs = three_revisions(&f);
    let out = f.run(&["forget", "db@r0", "db@r1", "--prune", "--max-unused", "0"]);
    assert_ok(&out);
    assert_eq!(f.snapshot_ids().len(), 1);
    let out = dumped(&f, "db@r2");
    assert_ok(&out);
    assert!(out.stdout == revs[2], "r2 lost bytes its runs are based on");
    assert_check_ok(&f, true, "after prune");
    // A new revision on top still works, and so does a full prune once r2 is gone too.
    let r3 = dump(3, ROWS);
    backup_dump(&f, &r3, "r3");
    assert_ok(&f.run(&["forget", "db@r2", "--prune", "--max-unused", "0"]));
    let out = dumped(&f, "db@r3");
    assert_ok(&out);
    assert!(out.stdout == r3);
    assert_check_ok(&f, true, "after the second prune");
}

#[test]
fn a_damaged_delta_run_is_named_and_never_restores_wrong_bytes() {
    let f = Fixture::small_packs();
    let r0 = dump(0, ROWS);
    backup_dump(&f, &r0, "r0");
    let before: Vec<_> = files_below(&f.repo().join("packs"));
    let r1 = dump(1, ROWS);
    backup_dump(&f, &r1, "r1");
    let runs: Vec<_> = files_below(&f.repo().join("packs"))
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!runs.is_empty());
    // Flip a byte inside the pack that holds r1's runs.
    let p = &runs[0];
    let mut b = fs::read(p).unwrap();
    let i = b.len() / 3;
    b[i] ^= 0x20;
    fs::write(p, b).unwrap();
    let out = f.run(&["check", "--read-data"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("db@r1"), "{}", stderr(&out));
    let out = dumped(&f, "db@r1");
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(101));
    assert!(
        r1.starts_with(&out.stdout),
        "a damaged run gave bytes that are not r1's"
    );
    // r0 does not need r1's runs.
    let out = dumped(&f, "db@r0");
    assert_ok(&out);
    assert!(out.stdout == r0);
    // Repair sets the damage aside; check passes; r0 is whole.
    let out = f.run(&["repair", "index", "--read-data"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = f.run(&["repair", "snapshots"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_check_ok(&f, true, "after repair");
    let out = dumped(&f, "db@r0");
    assert_ok(&out);
    assert!(out.stdout == r0);
}
