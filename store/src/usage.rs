//! What snapshots reach: the blobs behind each snapshot, read from trees and the index only
//! (file data is never decrypted). Stats, diff, forget, prune and check's damage reports
//! stand on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::Result;
use crate::id::{BlobId, SnapshotId};
use crate::repo::Repo;
use crate::tree::{Node, Tree};

/// Decoded trees, each decoded once however many snapshots share it.
pub struct TreeCache<'r> {
    repo: &'r Repo,
    trees: HashMap<BlobId, Arc<Tree>>,
}

impl<'r> TreeCache<'r> {
    /// An empty cache over `repo`.
    pub fn new(repo: &'r Repo) -> Self {
        Self {
            repo,
            trees: HashMap::new(),
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
    pub fn reach(&mut self, root: &BlobId, into: &mut HashSet<BlobId>) -> Result<()> {
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

/// Per-snapshot and per-blob accounting over a set of snapshots.
pub struct Usage {
    /// For every reached blob: how many of the snapshots reach it, and the last one that did.
    pub refs: HashMap<BlobId, (u32, u32)>,
    /// Index sizes (raw, stored) of every reached blob the index knows.
    pub sizes: HashMap<BlobId, (u32, u32)>,
    /// Per snapshot, in the order given.
    pub per_snapshot: Vec<SnapshotUsage>,
    /// Reached blobs the index does not know (a damaged repository).
    pub missing: u64,
}

impl Usage {
    /// Walks every snapshot in `snaps` (id and root tree).
    pub fn compute(repo: &Repo, snaps: &[(SnapshotId, BlobId)]) -> Result<Self> {
        let mut cache = TreeCache::new(repo);
        let mut refs: HashMap<BlobId, (u32, u32)> = HashMap::new();
        let mut sizes: HashMap<BlobId, (u32, u32)> = HashMap::new();
        let mut per_snapshot = vec![SnapshotUsage::default(); snaps.len()];
        let mut missing = HashSet::new();
        for (i, (_, root)) in snaps.iter().enumerate() {
            let mut mine = HashSet::new();
            cache.reach(root, &mut mine)?;
            for b in mine {
                let r = refs.entry(b).or_insert((0, 0));
                r.0 += 1;
                r.1 = i as u32;
                let sz = match sizes.get(&b) {
                    Some(s) => Some(*s),
                    None => match repo.index().get(&b)? {
                        Some(loc) => {
                            let share = footprint(&loc);
                            sizes.insert(b, (loc.raw_len, share));
                            Some((loc.raw_len, share))
                        }
                        None => {
                            missing.insert(b);
                            None
                        }
                    },
                };
                if let Some((raw, stored)) = sz {
                    per_snapshot[i].all.add(raw, stored);
                }
            }
        }
        for (b, (n, last)) in &refs {
            if *n == 1
                && let Some((raw, stored)) = sizes.get(b)
            {
                per_snapshot[*last as usize].unique.add(*raw, *stored);
            }
        }
        Ok(Self {
            refs,
            sizes,
            per_snapshot,
            missing: missing.len() as u64,
        })
    }

    /// Sizes of every reached blob.
    pub fn total(&self) -> Sizes {
        let mut s = Sizes::default();
        for (raw, stored) in self.sizes.values() {
            s.add(*raw, *stored);
        }
        s
    }
}

/// What a blob takes in its pack: its sealed bytes and its entry in the pack's table.
pub fn footprint(loc: &crate::index::Location) -> u32 {
    loc.stored_len + crate::pack::ENTRY_LEN as u32
}

/// Every blob the given root trees reach.
pub fn reachable(repo: &Repo, roots: &[BlobId]) -> Result<HashSet<BlobId>> {
    let mut cache = TreeCache::new(repo);
    let mut out = HashSet::new();
    for r in roots {
        cache.reach(r, &mut out)?;
    }
    Ok(out)
}
