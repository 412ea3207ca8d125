//! What snapshots reach: the blobs behind each snapshot, read from trees and the index only
//! (file data is never decrypted). Stats, diff, forget, prune and check's damage reports
//! stand on it.
//!
//! Sizes come from one sequential scan of the index rather than a lookup per blob, and every
//! map is keyed with [`IdBuild`] (ids are random already), so a million chunks take seconds.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;
use crate::id::{BlobId, IdMap, IdSet, SnapshotId};
use crate::index::Location;
use crate::repo::Repo;
use crate::tree::{Node, Tree};

/// Decoded trees, each decoded once however many snapshots share it.
pub struct TreeCache<'r> {
    repo: &'r Repo,
    trees: HashMap<BlobId, Arc<Tree>, crate::id::IdBuild>,
}

impl<'r> TreeCache<'r> {
    /// An empty cache over `repo`.
    pub fn new(repo: &'r Repo) -> Self {
        Self {
            repo,
            trees: HashMap::default(),
        }
    }

    /// A tree, decoded.
    pub fn get(&mut self, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.get(id) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.repo.load_tree(id)?);
        self.trees.insert(*id, t.clone());
        Ok(t)
    }

    /// Every blob (trees and data) below `root`, the root included, each once.
    pub fn reach(&mut self, root: &BlobId, into: &mut IdSet<BlobId>) -> Result<()> {
        let mut stack = vec![*root];
        while let Some(id) = stack.pop() {
            if !into.insert(id) {
                continue;
            }
            let tree = self.get(&id)?;
            for e in &tree.entries {
                match &e.node {
                    Node::Dir(sub) => stack.push(*sub),
                    Node::File(parts) => into.extend(parts.iter().map(|p| p.id)),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// What a blob takes in its pack: its sealed bytes and its entry in the pack's table.
pub fn footprint(loc: &Location) -> u32 {
    loc.stored_len + crate::pack::ENTRY_LEN as u32
}

/// Sizes of a set of blobs, from the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sizes {
    /// Blobs.
    pub blobs: u64,
    /// Their plaintext bytes.
    pub raw: u64,
    /// Their bytes in packs: compressed and sealed, with their entries in the pack tables.
    pub stored: u64,
}

impl Sizes {
    fn add(&mut self, raw: u32, stored: u32) {
        self.blobs += 1;
        self.raw += raw as u64;
        self.stored += stored as u64;
    }
}

/// What one snapshot costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotUsage {
    /// Every blob it reaches.
    pub all: Sizes,
    /// The blobs no other snapshot (of those walked) reaches: what deleting it alone frees.
    pub unique: Sizes,
}

/// Index sizes (raw, footprint) of every indexed blob, from one scan.
pub fn index_sizes(repo: &Repo) -> Result<IdMap<BlobId, (u32, u32)>> {
    let mut out = IdMap::default();
    repo.index().for_each_blob(|id, loc| {
        out.insert(*id, (loc.raw_len, footprint(loc)));
    })?;
    Ok(out)
}

/// Per-snapshot and per-blob accounting over a set of snapshots.
pub struct Usage {
    /// Per snapshot, in the order given.
    pub per_snapshot: Vec<SnapshotUsage>,
    /// Every blob some snapshot reaches.
    pub total: Sizes,
    /// The blobs only selected snapshots reach: what deleting the selection together frees.
    pub selection_unique: Sizes,
    /// Reached blobs the index does not know (a damaged repository).
    pub missing: u64,
}

impl Usage {
    /// Walks every snapshot in `snaps` (id and root tree); `selected[i]` marks a selection.
    pub fn compute(repo: &Repo, snaps: &[(SnapshotId, BlobId)], selected: &[bool]) -> Result<Self> {
        let sizes = index_sizes(repo)?;
        let mut runs = Runs::load(repo)?;
        let mut cache = TreeCache::new(repo);
        // Per blob: how many snapshots reach it, how many selected ones, and the last one.
        let mut refs: IdMap<BlobId, (u32, u32, u32)> = IdMap::default();
        let mut per_snapshot = vec![SnapshotUsage::default(); snaps.len()];
        for (i, (_, root)) in snaps.iter().enumerate() {
            let mut mine = IdSet::default();
            cache.reach(root, &mut mine)?;
            // A snapshot holding chunks inside delta runs needs the runs and their bases.
            runs.expand(repo, &mut mine)?;
            let sel = selected.get(i).copied().unwrap_or(false) as u32;
            for b in mine {
                let r = refs.entry(b).or_insert((0, 0, 0));
                r.0 += 1;
                r.1 += sel;
                r.2 = i as u32;
                if let Some((raw, stored)) = sizes.get(&b) {
                    per_snapshot[i].all.add(*raw, *stored);
                }
            }
        }
        let mut total = Sizes::default();
        let mut selection_unique = Sizes::default();
        let mut missing = 0;
        for (b, (n, sel, last)) in &refs {
            let Some((raw, stored)) = sizes.get(b) else {
                // A chunk inside a delta run costs nothing of its own.
                if !runs.is_member(b) {
                    missing += 1;
                }
                continue;
            };
            total.add(*raw, *stored);
            if *n == 1 {
                per_snapshot[*last as usize].unique.add(*raw, *stored);
            }
            if *sel == *n {
                selection_unique.add(*raw, *stored);
            }
        }
        Ok(Self {
            per_snapshot,
            total,
            selection_unique,
            missing,
        })
    }
}

/// Every blob the given root trees reach: trees, chunks, the delta runs holding chunks, and
/// the bases those runs are decoded against (whatever snapshot those came from).
pub fn reachable(repo: &Repo, roots: &[BlobId]) -> Result<IdSet<BlobId>> {
    let mut cache = TreeCache::new(repo);
    let mut out = IdSet::default();
    for r in roots {
        cache.reach(r, &mut out)?;
    }
    add_runs(repo, &mut out)?;
    Ok(out)
}

/// Adds to `set` the delta runs holding chunks in it, and (recursively) their bases.
pub fn add_runs(repo: &Repo, set: &mut IdSet<BlobId>) -> Result<()> {
    Runs::load(repo)?.expand(repo, set)
}

/// Which delta run each chunk stored inside one belongs to, and each run's bases (read from
/// run headers as needed, once).
pub struct Runs {
    member_run: HashMap<BlobId, BlobId>,
    bases: HashMap<BlobId, Vec<BlobId>>,
}

impl Runs {
    /// The member records of the index.
    pub fn load(repo: &Repo) -> Result<Self> {
        let mut member_run = HashMap::new();
        repo.index().for_each_member(|m, run| {
            member_run.insert(*m, *run);
        })?;
        Ok(Self {
            member_run,
            bases: HashMap::new(),
        })
    }

    /// Whether a chunk is stored inside a delta run (its bytes are counted with the run's).
    pub fn is_member(&self, id: &BlobId) -> bool {
        self.member_run.contains_key(id)
    }

    /// The delta run a chunk is stored inside, if any.
    pub fn run_of(&self, id: &BlobId) -> Option<BlobId> {
        self.member_run.get(id).copied()
    }

    /// Every chunk stored inside a delta run, with its run.
    pub fn members(&self) -> impl Iterator<Item = (&BlobId, &BlobId)> {
        self.member_run.iter()
    }

    /// Adds to `set` the runs holding chunks in it, and (recursively) their bases.
    pub fn expand(&mut self, repo: &Repo, set: &mut IdSet<BlobId>) -> Result<()> {
        if self.member_run.is_empty() {
            return Ok(());
        }
        let mut todo: Vec<BlobId> = set
            .iter()
            .filter_map(|id| self.member_run.get(id).copied())
            .collect();
        while let Some(run) = todo.pop() {
            if !set.insert(run) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(v) = self.bases.entry(run) {
                let b = repo.run_header(&run)?.bases.into_iter().map(|(b, _)| b);
                v.insert(b.collect());
            }
            for base in &self.bases[&run] {
                set.insert(*base);
                if let Some(r) = self.member_run.get(base) {
                    todo.push(*r);
                }
            }
        }
        Ok(())
    }
}
