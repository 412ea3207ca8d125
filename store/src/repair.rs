//! `repair`: after damage, keep what is whole, set aside what is not, and say what was lost.
//!
//! Nothing is ever deleted. A damaged pack or an unreadable snapshot file is copied to
//! `damaged/` (same name below it) before it leaves its place, so an operator who finds a
//! good copy of the file elsewhere can put it back, and `index rebuild` picks it up again.
//!
//! - [`repair_index`]: reads every pack (its table, and with `read_data` every blob); the
//!   blobs of a damaged pack that still authenticate and hash to their ids are written to a
//!   new pack, the damaged pack is set aside, and the index is rebuilt from what remains.
//! - [`repair_snapshots`]: every snapshot that needs a blob the index no longer has is
//!   written again without the files and directories that cannot be restored whole (each
//!   one named), tagged `repaired`, and the original file is set aside. A snapshot whose
//!   every file is lost, or whose file cannot be read at all, is set aside whole.
//!
//! Run them in that order: `check --read-data` names the damage, `repair index --read-data`
//! takes the damaged packs out, `repair snapshots` drops what they took with them, and the
//! next `check` passes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::Backend;
use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::pack::{self, PackBuilder};
use crate::repo::{self, Repo, SyncReport, pack_name};
use crate::snapshot::Snapshot;
use crate::tree::{Node, Tree};

/// Where set-aside files go.
pub const DAMAGED_DIR: &str = "damaged";

/// The tag a repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// A damaged pack and what became of it.
#[derive(Clone, Debug, Serialize)]
pub struct Salvage {
    /// The pack.
    pub pack: String,
    /// What is wrong with it.
    pub why: String,
    /// Blobs that were whole and were written to a new pack.
    pub kept: usize,
    /// Blobs that were lost.
    pub lost: usize,
    /// Where the damaged file now is (empty in a dry run).
    pub moved_to: String,
}

/// What [`repair_index`] did.
#[derive(Debug, Default, Serialize)]
pub struct IndexReport {
    /// Packs looked at.
    pub packs: usize,
    /// Packs read whole.
    pub packs_read: usize,
    /// Damaged packs, salvaged and set aside.
    pub salvaged: Vec<Salvage>,
    /// New packs holding the salvaged blobs.
    pub new_packs: usize,
    /// Packs in the rebuilt index.
    pub indexed_packs: u64,
    /// Snapshots in the rebuilt index.
    pub indexed_snapshots: u64,
}

/// Reads every pack, salvages and sets aside the damaged ones, and rebuilds the index.
/// With `dry_run` only reports. Holds the exclusive lock throughout.
pub fn repair_index(
    backend: Arc<dyn Backend>,
    path: &Path,
    password: &[u8],
    read_data: bool,
    dry_run: bool,
) -> Result<IndexReport> {
    let repo = Repo::open_backend(
        backend.clone(),
        path,
        password,
        repo::Mode::Keys,
        &path.join("index"),
    )?;
    let _lock = crate::lock::acquire(&backend, repo.keys(), true, "repair index")?;
    let mut report = IndexReport::default();
    let pending = repo.pending_deletion()?;
    let mut builder: Option<PackBuilder> = None;
    let mut set_aside = Vec::new();
    for name in backend.list("packs")? {
        let Ok(id) = PackId::from_hex(name.rsplit('/').next().unwrap_or_default()) else {
            continue;
        };
        // A prune has hidden it and will delete it: not ours to judge.
        if pending.contains(&id) {
            continue;
        }
        report.packs += 1;
        let damage = if read_data {
            report.packs_read += 1;
            read_whole(&repo, &id)?
        } else {
            match repo.pack_toc(&id) {
                Ok(_) => None,
                Err(e @ Error::Corrupt { .. }) => Some((e.to_string(), Vec::new(), 0)),
                Err(e) => return Err(e),
            }
        };
        let Some((why, good, lost)) = damage else {
            continue;
        };
        let kept = good.len();
        if !dry_run {
            for (blob_id, kind, raw_len, enc) in good {
                let b = builder.get_or_insert_with(|| PackBuilder::new(repo.keys()));
                b.add(blob_id, kind, raw_len, &enc);
                if b.len() >= repo.config().pack_size as usize
                    || b.entries().len() >= pack::MAX_ENTRIES
                {
                    write_pack(&backend, builder.take().expect("open"))?;
                    report.new_packs += 1;
                }
            }
        }
        set_aside.push((
            name,
            Salvage {
                pack: id.to_hex(),
                why,
                kept,
                lost,
                moved_to: String::new(),
            },
        ));
    }
    if let Some(b) = builder.take()
        && !b.is_empty()
    {
        write_pack(&backend, b)?;
        report.new_packs += 1;
    }
    // The salvaged blobs are durable in their new packs: only now do the damaged ones move.
    for (name, mut s) in set_aside {
        if !dry_run {
            s.moved_to = move_aside(backend.as_ref(), &name)?;
        }
        report.salvaged.push(s);
    }
    if !dry_run {
        let r: SyncReport = repo::rebuild_index_locked(backend, path, password)?;
        report.indexed_packs = r.packs_added;
        report.indexed_snapshots = r.snapshots_added;
    }
    Ok(report)
}

type Good = Vec<(BlobId, BlobKind, u32, Vec<u8>)>;

/// Reads a pack whole. `None` when it is whole; otherwise why, the blobs that are still
/// whole (encoded, ready to seal again), and how many were lost.
fn read_whole(repo: &Repo, id: &PackId) -> Result<Option<(String, Good, usize)>> {
    let w = match crate::check::read_pack(repo, id) {
        Ok(w) => w,
        Err(e @ Error::Corrupt { .. }) => return Ok(Some((e.to_string(), Vec::new(), 0))),
        Err(e) => return Err(e),
    };
    Ok(crate::check::why_damaged(&w).map(|why| (why, w.good, w.lost.len())))
}

fn write_pack(backend: &Arc<dyn Backend>, b: PackBuilder) -> Result<()> {
    let (id, bytes, _) = b.finish();
    backend.write(&pack_name(&id), &bytes)
}

/// Copies `name` to `damaged/NAME`, then removes it. Returns the new name.
fn move_aside(backend: &dyn Backend, name: &str) -> Result<String> {
    let to = format!("{DAMAGED_DIR}/{name}");
    let bytes = backend.read(name)?;
    backend.write(&to, &bytes)?;
    backend.remove(name)?;
    Ok(to)
}

/// A snapshot that was written again without what it lost.
#[derive(Clone, Debug, Serialize)]
pub struct Rewritten {
    /// The damaged snapshot (now set aside).
    pub old: String,
    /// Its repaired replacement (empty in a dry run).
    pub new: String,
    /// Its `service@revision`, if any.
    pub label: Option<String>,
    /// Files and directories left out because their data is lost.
    pub lost: Vec<String>,
}

/// A snapshot set aside whole.
#[derive(Clone, Debug, Serialize)]
pub struct SetAside {
    /// The snapshot.
    pub snapshot: String,
    /// Its `service@revision`, if known.
    pub label: Option<String>,
    /// Why nothing of it could be kept.
    pub why: String,
}

/// What [`repair_snapshots`] did.
#[derive(Debug, Default, Serialize)]
pub struct SnapshotsReport {
    /// Snapshots looked at.
    pub snapshots: usize,
    /// Snapshots written again without what they lost.
    pub rewritten: Vec<Rewritten>,
    /// Snapshots set aside whole.
    pub set_aside: Vec<SetAside>,
}

/// Writes again every snapshot that needs a blob the index does not have, without the
/// files and directories that lost data; sets aside those with nothing left. With
/// `dry_run` only reports. Takes the exclusive lock.
pub fn repair_snapshots(repo: &Repo, dry_run: bool) -> Result<SnapshotsReport> {
    let _lock = repo.lock(true, "repair snapshots")?;
    let mut report = SnapshotsReport::default();
    for sid in repo.snapshot_ids()? {
        report.snapshots += 1;
        let name = format!("snapshots/{}", sid.to_hex());
        let snap = match repo.load_snapshot(&sid) {
            Ok(s) => s,
            Err(e @ (Error::Corrupt { .. } | Error::NewerFormat { .. })) => {
                if matches!(e, Error::NewerFormat { .. }) {
                    // Written by a newer cairn: not damage, and not ours to judge.
                    continue;
                }
                if !dry_run {
                    move_aside(repo.backend().as_ref(), &name)?;
                    repo.index().remove_snapshot(&sid)?;
                }
                report.set_aside.push(SetAside {
                    snapshot: sid.to_hex(),
                    label: None,
                    why: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut w = Rewrite {
            repo,
            lost: Vec::new(),
            dropped: HashSet::new(),
            new_trees: Vec::new(),
            files_kept: 0,
        };
        let root = w.tree(&snap.tree, &mut Vec::new())?;
        if w.lost.is_empty() {
            continue;
        }
        let label = snap.label();
        let root = match root {
            Some(r) if w.files_kept > 0 || snap.summary.files == 0 => r,
            _ => {
                if !dry_run {
                    move_aside(repo.backend().as_ref(), &name)?;
                    repo.index().remove_snapshot(&sid)?;
                }
                report.set_aside.push(SetAside {
                    snapshot: sid.to_hex(),
                    label,
                    why: format!("all of its data is lost ({})", w.lost.join(", ")),
                });
                continue;
            }
        };
        let mut new = String::new();
        if !dry_run {
            if !w.new_trees.is_empty() {
                let blobs: Vec<(BlobKind, Vec<u8>)> =
                    w.new_trees.drain(..).map(|t| (BlobKind::Tree, t)).collect();
                repo.store_blobs(&blobs)?;
            }
            let mut fixed: Snapshot = snap.clone();
            fixed.tree = root;
            if !fixed.tags.iter().any(|t| t == REPAIRED_TAG) {
                fixed.tags.push(REPAIRED_TAG.into());
            }
            // The replacement is durable before the original moves.
            let id = repo.save_snapshot(&fixed)?;
            move_aside(repo.backend().as_ref(), &name)?;
            repo.index().remove_snapshot(&sid)?;
            new = id.to_hex();
        }
        report.rewritten.push(Rewritten {
            old: sid.to_hex(),
            new,
            label,
            lost: w.lost,
        });
    }
    Ok(report)
}

struct Rewrite<'r> {
    repo: &'r Repo,
    /// Paths left out, for the report.
    lost: Vec<String>,
    /// Paths left out, as components (hard links to them go too).
    dropped: HashSet<Vec<Vec<u8>>>,
    /// Encoded trees to store.
    new_trees: Vec<Vec<u8>>,
    /// Files kept (so a snapshot with nothing left is set aside).
    files_kept: u64,
}

impl Rewrite<'_> {
    /// The id of `tree` without what is lost below it; `None` when the tree itself is lost.
    fn tree(&mut self, id: &BlobId, path: &mut Vec<Vec<u8>>) -> Result<Option<BlobId>> {
        let t = match self.repo.load_tree(id) {
            Ok(t) => t,
            Err(Error::Corrupt { .. }) => {
                self.lose(path, "/ (the whole directory)");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut out = Tree::default();
        let mut changed = false;
        for e in &t.entries {
            path.push(e.name.clone());
            let keep = match &e.node {
                Node::Dir(sub) => match self.tree(sub, path)? {
                    Some(new) if new == *sub => Some(e.clone()),
                    Some(new) => {
                        let mut e = e.clone();
                        e.node = Node::Dir(new);
                        Some(e)
                    }
                    None => None,
                },
                Node::File(parts) => {
                    let mut whole = true;
                    for p in parts {
                        if !self.repo.index().contains(&p.id)? {
                            whole = false;
                            break;
                        }
                    }
                    if whole {
                        self.files_kept += 1;
                        Some(e.clone())
                    } else {
                        self.lose(path, "");
                        None
                    }
                }
                // Its target, or a directory above it, was left out.
                Node::HardLink(to) if (1..=to.len()).any(|n| self.dropped.contains(&to[..n])) => {
                    self.lose(path, " (a hard link to a lost file)");
                    None
                }
                _ => Some(e.clone()),
            };
            path.pop();
            match keep {
                Some(k) => {
                    changed |= k.node != e.node;
                    out.entries.push(k);
                }
                None => changed = true,
            }
        }
        if !changed {
            return Ok(Some(*id));
        }
        let enc = out.encode();
        let new = self.repo.keys().tree_id(&enc);
        self.new_trees.push(enc);
        Ok(Some(new))
    }

    fn lose(&mut self, path: &[Vec<u8>], why: &str) {
        let shown: Vec<String> = path
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        if shown.is_empty() {
            self.lost.push("/ (the whole snapshot)".into());
        } else {
            self.lost.push(format!("/{}{why}", shown.join("/")));
        }
        self.dropped.insert(path.to_vec());
    }
}
