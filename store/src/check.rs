//! `check`: is every byte still there and readable?
//!
//! Structure (always): every pack on disk has a table that authenticates and agrees with the
//! index; every pack the index names exists; every snapshot decodes, every tree it reaches
//! decodes, and every blob it needs is indexed. Data (on request): the chosen packs are read
//! whole, their names re-hashed, and every blob decrypted, decompressed and re-hashed. The
//! time each pack was last verified is kept in the index, so `--read-data-subset` runs
//! cover the repository least recently verified first. Every damaged pack is reported with
//! the snapshots, labels and paths it affects.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use crate::blob::{self, BlobKind};
use crate::error::Result;
use crate::id::{BlobId, IdSet, PackId, SnapshotId};
use crate::index::Location;
use crate::pack;
use crate::repo::{Repo, pack_name};
use crate::tree::Node;
use crate::usage::TreeCache;

/// Which packs to read whole.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// None: structure only.
    None,
    /// Every pack.
    All,
    /// This percentage of packs, least recently verified first.
    Subset(f64),
    /// Packs not verified since this time (ns since the epoch).
    Since(i64),
}

/// A snapshot that damage reaches, and where.
#[derive(Clone, Debug, Serialize)]
pub struct Affected {
    /// The snapshot.
    pub snapshot: String,
    /// Its `service@revision`, if any.
    pub label: Option<String>,
    /// Files and directories inside it that cannot be restored whole.
    pub paths: Vec<String>,
}

/// A damaged or missing pack.
#[derive(Clone, Debug, Serialize)]
pub struct Damage {
    /// The pack.
    pub pack: String,
    /// What is wrong.
    pub why: String,
    /// The blobs lost with it.
    pub blobs: usize,
    /// What it breaks.
    pub affects: Vec<Affected>,
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Packs on disk.
    pub packs: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Snapshots.
    pub snapshots: usize,
    /// Distinct trees decoded.
    pub trees: usize,
    /// Packs read whole.
    pub packs_read: usize,
    /// Which packs were read whole (ids).
    pub read: Vec<String>,
    /// Bytes read whole.
    pub bytes_read: u64,
    /// Problems that are not damaged packs (index disagreements, undecodable snapshots).
    pub errors: Vec<String>,
    /// Damaged or missing packs and what they affect.
    pub damaged: Vec<Damage>,
    /// Things worth knowing that are not damage.
    pub notes: Vec<String>,
}

impl Report {
    /// Whether everything checked out.
    pub fn ok(&self) -> bool {
        self.errors.is_empty() && self.damaged.is_empty()
    }
}

/// Hears about progress: bytes read whole.
pub trait Progress: Sync {
    /// `n` more bytes were read.
    fn bytes(&self, _n: u64) {}
}

/// Runs the checks.
pub fn check(repo: &Repo, read: ReadData, progress: &dyn Progress) -> Result<Report> {
    let mut r = Report::default();
    // Snapshots first, then the index: a backup indexes its packs before it writes its
    // snapshot file, so every snapshot listed here has its blobs in the index read next. (A
    // snapshot written after this listing is not checked; listed later, it would be checked
    // against an older index and its new blobs reported as missing.)
    let ids = repo.snapshot_ids()?;
    repo.index().refresh()?;
    // Index entries grouped by pack.
    let mut by_pack: HashMap<PackId, Vec<(BlobId, Location)>> = HashMap::new();
    repo.index().for_each_blob(|id, loc| {
        by_pack.entry(loc.pack).or_default().push((*id, *loc));
    })?;
    r.blobs = by_pack.values().map(Vec::len).sum();
    let mut indexed_blobs: IdSet<BlobId> = by_pack
        .values()
        .flat_map(|v| v.iter().map(|(b, _)| *b))
        .collect();
    // Chunks inside delta runs: indexed if their run is; lost with their run.
    let runs = crate::usage::Runs::load(repo)?;
    for (m, run) in runs.members() {
        if indexed_blobs.contains(run) {
            indexed_blobs.insert(*m);
        }
    }
    let indexed: HashSet<PackId> = repo.index().packs()?.into_iter().map(|p| p.0).collect();
    let pending = repo.pending_deletion()?;
    let mut on_disk = Vec::new();
    for name in repo.backend().list("packs")? {
        if let Ok(id) = PackId::from_hex(name.rsplit('/').next().unwrap_or_default()) {
            on_disk.push(id);
        }
    }
    r.packs = on_disk.len();
    let disk: HashSet<PackId> = on_disk.iter().copied().collect();
    // pack → why it is damaged; the blobs lost with it.
    let mut bad: HashMap<PackId, (String, HashSet<BlobId>)> = HashMap::new();
    for id in indexed.iter().chain(by_pack.keys()) {
        if !disk.contains(id) && !bad.contains_key(id) {
            let lost = indexed_in(&by_pack, id);
            bad.insert(*id, ("the pack file is missing".into(), lost));
        }
    }
    for id in &on_disk {
        if !indexed.contains(id) && !pending.contains(id) {
            // Written by a writer that stopped before indexing it (a crash): not damage. Its
            // table is checked below; the next backup or `index rebuild` indexes it.
            r.notes.push(format!(
                "pack {} is not in the index yet (left by an interrupted writer; the next backup indexes it)",
                id.short()
            ));
        }
        match repo.pack_toc(id) {
            // Deleted meanwhile by the prune that had hidden it: not damage.
            Err(crate::Error::NotFound(_)) | Err(crate::Error::Io { .. })
                if pending.contains(id) => {}
            Err(e) => {
                let lost = indexed_in(&by_pack, id);
                bad.insert(*id, (e.to_string(), lost));
            }
            Ok(toc) => {
                for (blob, loc) in by_pack.get(id).map(Vec::as_slice).unwrap_or_default() {
                    let agrees = toc.get(loc.slot as usize).is_some_and(|e| {
                        e.id == *blob
                            && e.offset == loc.offset
                            && e.stored_len == loc.stored_len
                            && e.raw_len == loc.raw_len
                            && e.kind == loc.kind
                    });
                    if !agrees {
                        r.errors.push(format!(
                            "index entry of blob {} disagrees with the table of pack {} (run `cairn index rebuild`)",
                            blob.short(),
                            id.short()
                        ));
                    }
                }
            }
        }
    }
    // Data.
    let chosen = choose(repo, &on_disk, read)?;
    let mut verified = Vec::new();
    for id in &chosen {
        if bad.contains_key(id) {
            continue;
        }
        match read_pack(repo, id) {
            Ok(w) => {
                r.packs_read += 1;
                r.read.push(id.to_hex());
                r.bytes_read += w.size;
                progress.bytes(w.size);
                match why_damaged(&w) {
                    None => verified.push(*id),
                    Some(why) => {
                        bad.insert(*id, (why, w.lost));
                    }
                }
            }
            // Deleted meanwhile by the prune that had hidden it: not damage.
            Err(crate::Error::NotFound(_)) | Err(crate::Error::Io { .. })
                if pending.contains(id) => {}
            Err(e) => {
                let lost = indexed_in(&by_pack, id);
                bad.insert(*id, (e.to_string(), lost));
            }
        }
    }
    repo.index().set_verified(&verified, crate::now_ns())?;
    // Snapshots, trees, and what damage reaches.
    let mut lost_blobs: HashMap<BlobId, PackId> = HashMap::new();
    for (pack, (_, blobs)) in &bad {
        for b in blobs {
            lost_blobs.insert(*b, *pack);
        }
    }
    for (m, run) in runs.members() {
        if let Some(pack) = lost_blobs.get(run).copied() {
            lost_blobs.insert(*m, pack);
        }
    }
    let mut affects: HashMap<PackId, Vec<Affected>> = HashMap::new();
    let mut cache = TreeCache::new(repo);
    let mut seen_trees = HashSet::new();
    r.snapshots = ids.len();
    for sid in ids {
        let snap = match repo.load_snapshot(&sid) {
            Ok(s) => s,
            // Forgotten since it was listed.
            Err(crate::Error::NotFound(_)) => {
                r.snapshots -= 1;
                continue;
            }
            Err(e) => {
                r.errors.push(e.to_string());
                continue;
            }
        };
        let mut hits: HashMap<PackId, Vec<String>> = HashMap::new();
        let mut w = Walk {
            cache: &mut cache,
            sid: &sid,
            lost: &lost_blobs,
            indexed: &indexed_blobs,
            hits: &mut hits,
            seen: &mut seen_trees,
            errors: &mut r.errors,
        };
        w.walk(&snap.tree, "");
        for (pack, paths) in hits {
            affects.entry(pack).or_default().push(Affected {
                snapshot: sid.to_hex(),
                label: snap.label(),
                paths,
            });
        }
    }
    r.trees = seen_trees.len();
    let mut damaged: Vec<Damage> = bad
        .into_iter()
        .map(|(pack, (why, blobs))| Damage {
            pack: pack.to_hex(),
            why,
            blobs: blobs.len(),
            affects: affects.remove(&pack).unwrap_or_default(),
        })
        .collect();
    damaged.sort_by(|a, b| a.pack.cmp(&b.pack));
    r.damaged = damaged;
    Ok(r)
}

/// The blobs the index places in `pack`: what is lost with it.
fn indexed_in(
    by_pack: &HashMap<PackId, Vec<(BlobId, Location)>>,
    pack: &PackId,
) -> HashSet<BlobId> {
    by_pack
        .get(pack)
        .map(|v| v.iter().map(|(b, _)| *b).collect())
        .unwrap_or_default()
}

/// Packs to read whole.
fn choose(repo: &Repo, on_disk: &[PackId], read: ReadData) -> Result<Vec<PackId>> {
    let verified = repo.index().verified()?;
    let mut packs: Vec<(i64, PackId)> = on_disk
        .iter()
        .map(|p| (verified.get(p).copied().unwrap_or(0), *p))
        .collect();
    packs.sort();
    Ok(match read {
        ReadData::None => Vec::new(),
        ReadData::All => packs.into_iter().map(|(_, p)| p).collect(),
        ReadData::Subset(pct) => {
            let n = ((packs.len() as f64) * pct / 100.0).ceil() as usize;
            packs
                .into_iter()
                .take(n.min(on_disk.len()))
                .map(|(_, p)| p)
                .collect()
        }
        ReadData::Since(t) => packs
            .into_iter()
            .filter(|(v, _)| *v < t)
            .map(|(_, p)| p)
            .collect(),
    })
}

/// A pack read whole and every blob in it verified.
pub(crate) struct WholePack {
    /// Its size in bytes.
    pub size: u64,
    /// Whether its bytes hash to its name.
    pub name_ok: bool,
    /// The blobs that decrypt, decompress and hash to their ids, still encoded (ready to be
    /// sealed again elsewhere): id, kind, length.
    pub good: Vec<(BlobId, BlobKind, u32, Vec<u8>)>,
    /// The blobs that fail.
    pub lost: HashSet<BlobId>,
}

/// Reads a pack whole: its name, its table, then every blob. An unreadable table fails the
/// pack.
pub(crate) fn read_pack(repo: &Repo, id: &PackId) -> Result<WholePack> {
    let what = format!("pack {}", id.short());
    let bytes = repo.backend().read(&pack_name(id))?;
    let (key, toc) = pack::open_pack(repo.keys(), &bytes, &what)?;
    // The blobs are opened, decoded and re-hashed on every core, beside the hash of the
    // whole pack (one core did it all: a check read 0.76x as fast as restic's).
    let (name_ok, opened) = rayon::join(
        || blake3::hash(&bytes).as_bytes() == &id.0,
        || {
            toc.par_iter()
                .enumerate()
                .map(|(slot, e)| {
                    let sealed =
                        &bytes[e.offset as usize..e.offset as usize + e.stored_len as usize];
                    blob::open_encoded(&key, slot as u32, &e.id, e.kind, e.raw_len, sealed, &what)
                        .ok()
                        // A delta run is decoded against its bases, which may be in other
                        // packs.
                        .filter(|enc| {
                            repo.decode_encoded(&e.id, e.kind, e.raw_len, enc, &what)
                                .is_ok()
                        })
                })
                .collect::<Vec<_>>()
        },
    );
    let mut good = Vec::new();
    let mut lost = HashSet::new();
    for (e, whole) in toc.iter().zip(opened) {
        match whole {
            Some(enc) => good.push((e.id, e.kind, e.raw_len, enc)),
            None => {
                lost.insert(e.id);
            }
        }
    }
    Ok(WholePack {
        size: bytes.len() as u64,
        name_ok,
        good,
        lost,
    })
}

/// Why a pack read whole is damaged, or `None` if it is whole.
pub(crate) fn why_damaged(w: &WholePack) -> Option<String> {
    let mut why = Vec::new();
    if !w.name_ok {
        why.push("its bytes do not hash to its name".to_string());
    }
    if !w.lost.is_empty() {
        why.push(format!(
            "{} of its blobs fail authentication or their hash",
            w.lost.len()
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

struct Walk<'a, 'r> {
    cache: &'a mut TreeCache<'r>,
    sid: &'a SnapshotId,
    lost: &'a HashMap<BlobId, PackId>,
    indexed: &'a IdSet<BlobId>,
    hits: &'a mut HashMap<PackId, Vec<String>>,
    seen: &'a mut HashSet<BlobId>,
    errors: &'a mut Vec<String>,
}

impl Walk<'_, '_> {
    fn walk(&mut self, tree: &BlobId, path: &str) {
        if let Some(pack) = self.lost.get(tree) {
            self.hits
                .entry(*pack)
                .or_default()
                .push(format!("{path}/ (the whole directory)"));
            return;
        }
        let t = match self.cache.get(tree) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(format!(
                    "snapshot {}: directory {path}/: {e}",
                    self.sid.short()
                ));
                return;
            }
        };
        // A tree met again in the same snapshot was already reported; across snapshots the
        // walk repeats, so that every snapshot a damaged file is in gets named.
        self.seen.insert(*tree);
        for e in &t.entries {
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            match &e.node {
                Node::Dir(sub) => self.walk(sub, &p),
                Node::File(parts) => {
                    let mut packs: Vec<PackId> = parts
                        .iter()
                        .filter_map(|x| self.lost.get(&x.id).copied())
                        .collect();
                    packs.dedup();
                    for pack in packs {
                        self.hits.entry(pack).or_default().push(p.clone());
                    }
                    for part in parts {
                        if !self.lost.contains_key(&part.id) && !self.indexed.contains(&part.id) {
                            self.errors.push(format!(
                                "snapshot {}: {p} needs blob {}, which is not indexed",
                                self.sid.short(),
                                part.id.short()
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
