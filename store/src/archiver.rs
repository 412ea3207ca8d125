//! Backup: walks paths and reads one stream, cuts them into chunks, stores the new ones and
//! writes trees and a snapshot.
//!
//! ```text
//! files / stream ──read──▶ chunker ──▶ batch (≤ 16 MiB) ──rayon──▶ keyed BLAKE3 ids
//!                                                     ──dedup (index + this session)──▶ new chunks
//!                                                     ──rayon──▶ zstd ──▶ seal into pack ──▶ packs/
//! ```
//! Memory is bounded by one batch, its compressed copy and one open pack, whatever the input.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

use rayon::prelude::*;

use crate::blob::{self, BlobKind};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::fsmeta;
use crate::id::{BlobId, SnapshotId};
use crate::pack::PackBuilder;
use crate::repo::{Repo, pack_name};
use crate::snapshot::{SNAPSHOT_VERSION, Snapshot, Summary};
use crate::tree::{Entry, Node, PART_CHUNK, PART_IN_RUN, Part, Tree};

const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of a delta-coded stream read, cut and hashed ahead of the thread predicting runs
/// (one such batch is being read while another waits, and a third is looked up): 2 MiB
/// batches were as fast as 4 MiB ones and hold 6 MiB less.
const READ_AHEAD_BYTES: usize = 2 << 20;

pub use crate::command::CommandLine;

/// Where a backup's stream comes from.
pub enum StreamSource {
    /// Any reader (standard input).
    Reader(Box<dyn Read + Send>),
    /// The standard output of a command; the backup fails unless it exits 0.
    Command(CommandLine),
}

/// A stream stored as one file in the snapshot's root.
pub struct Stream {
    /// The file name in the snapshot.
    pub name: String,
    /// Where its bytes come from.
    pub source: StreamSource,
}

/// One thing stored under the snapshot's root.
pub enum Item {
    /// A file or directory stored under `name`, without the entries at the `exclude` paths
    /// (relative to it, `/`-separated).
    Path {
        /// Name in the snapshot's root.
        name: String,
        /// Where it is.
        path: PathBuf,
        /// Relative paths left out.
        exclude: Vec<String>,
    },
    /// A stream stored as one file.
    Stream(Stream),
}

impl Item {
    /// A path stored under its base name, as `cairn backup PATH` does.
    pub fn path(p: &Path) -> Result<Self> {
        let name = base_name(p)?;
        let name = String::from_utf8(name)
            .map_err(|_| Error::Invalid(format!("{}: base name is not UTF-8", p.display())))?;
        Ok(Item::Path {
            name,
            path: p.to_path_buf(),
            exclude: Vec::new(),
        })
    }

    fn name(&self) -> &str {
        match self {
            Item::Path { name, .. } => name,
            Item::Stream(s) => &s.name,
        }
    }
}

/// What to back up and how to label it.
#[derive(Default)]
pub struct BackupOptions {
    /// What goes under the snapshot's root.
    pub items: Vec<Item>,
    /// Service label.
    pub service: Option<String>,
    /// Revision label.
    pub revision: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// The snapshot to compare with: a file whose size, times and inode match its entry
    /// there is not read again, and a changed file or stream is stored as delta runs against
    /// its version there (see `delta.rs`). `None` picks [`default_parent`].
    pub parent: Option<SnapshotId>,
    /// Reads every file and leaves the parent's trees alone: no file is taken from them
    /// and none is delta-coded against them (streams still are).
    pub reread: bool,
}

/// Hears about a backup's progress. Every method has a silent default.
pub trait Progress: Sync {
    /// `n` more bytes were read.
    fn bytes(&self, _n: u64) {}
    /// Something was skipped or could not be read.
    fn warn(&self, _msg: &str) {}
}

/// A progress sink that ignores everything.
pub struct Silent;
impl Progress for Silent {}

/// Outcome of a backup.
pub struct BackupResult {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Entries that could not be read (each also went to [`Progress::warn`]).
    pub warnings: Vec<String>,
}

/// Checks a name that will become one path component in a snapshot.
pub fn valid_component(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Runs a backup and writes its snapshot. All or nothing: if any item fails (a command
/// exits non-zero, a path is missing), no snapshot is written.
pub fn backup(repo: &Repo, opts: BackupOptions, progress: &dyn Progress) -> Result<BackupResult> {
    let started = Instant::now();
    let _lock = repo.lock(false, "backup")?;
    let mut a = Archiver::new(repo, progress)?;
    a.reread = opts.reread;
    let parent = match opts.parent {
        Some(p) => Some(p),
        None => default_parent(repo, &opts)?,
    };
    // The snapshot names its parent only if it was read.
    let parent = match parent {
        Some(p) if a.load_parent(&p)? => Some(p),
        _ => None,
    };
    let mut root: Vec<(Entry, Option<usize>)> = Vec::new();
    let mut names = HashSet::new();
    let mut shown = Vec::new();
    if opts.items.is_empty() {
        return Err(Error::Invalid(
            "nothing to back up: give paths, --stdin or --command".into(),
        ));
    }
    for item in opts.items {
        let name = item.name().to_string();
        if !valid_component(name.as_bytes()) {
            return Err(Error::Invalid(format!(
                "{name:?} cannot be a file name in a snapshot"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(Error::Invalid(format!(
                "two items would both be stored as {name:?} in the snapshot's root"
            )));
        }
        match item {
            Item::Path { path, exclude, .. } => {
                std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
                a.exclude = exclude
                    .iter()
                    .map(|x| {
                        x.split('/')
                            .filter(|c| !c.is_empty())
                            .map(|c| c.as_bytes().to_vec())
                            .collect()
                    })
                    .collect();
                let mut rel = vec![name.as_bytes().to_vec()];
                // Reading everything also means not walking the parent's trees.
                let was = (!a.reread)
                    .then(|| a.parent_root.get(name.as_bytes()).cloned())
                    .flatten();
                if let Some(e) = a.entry(&path, name.into_bytes(), &mut rel, was.as_ref())? {
                    root.push(e);
                }
                a.exclude.clear();
                shown.push(path.display().to_string());
            }
            Item::Stream(s) => {
                shown.push(format!("<{}>", s.name));
                root.push(a.stream(s)?);
            }
        }
    }
    let tree_id = a.finish_dir(root)?;
    a.finish_pack()?;
    a.index_packs()?;
    let mut summary = a.summary;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time_ns: crate::now_ns(),
        hostname: crate::lock::hostname(),
        username: std::env::var("USER").unwrap_or_default(),
        paths: shown,
        tree: tree_id,
        service: opts.service.clone(),
        revision: opts.revision.clone(),
        tags: opts.tags.clone(),
        parent,
        summary,
    };
    let id = repo.save_snapshot(&snapshot)?;
    Ok(BackupResult {
        id,
        snapshot,
        warnings: a.warnings,
    })
}

/// The snapshot a backup is compared with when none is given: the newest with the same
/// service label, or, without one, the newest with the same item names.
pub fn default_parent(repo: &Repo, opts: &BackupOptions) -> Result<Option<SnapshotId>> {
    let names: Vec<String> = opts
        .items
        .iter()
        .map(|i| match i {
            Item::Path { path, .. } => path.display().to_string(),
            Item::Stream(s) => format!("<{}>", s.name),
        })
        .collect();
    // Newest first, by the times the index holds (a write-mode open has just synced it with
    // the files): usually the first snapshot file read is the parent, instead of every
    // snapshot file of the repository being read for every backup.
    for (id, _) in repo.index().snapshots_newest_first()? {
        // A snapshot file that cannot be read (or is gone) cannot be a parent; it is no
        // reason to fail.
        let Ok(s) = repo.load_snapshot(&id) else {
            continue;
        };
        let same = match &opts.service {
            Some(svc) => s.service.as_deref() == Some(svc),
            None => s.service.is_none() && s.paths == names,
        };
        if same {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn base_name(p: &Path) -> Result<Vec<u8>> {
    let abs = if p.file_name().is_some() {
        p.to_path_buf()
    } else {
        std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?
    };
    abs.file_name()
        .map(|n| n.as_bytes().to_vec())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no base name to store it under",
                p.display()
            ))
        })
}

struct Archiver<'r> {
    repo: &'r Repo,
    progress: &'r dyn Progress,
    tree_chunker: Chunker,
    stream_chunker: Chunker,
    level: i32,
    pack: Option<PackBuilder>,
    session: HashSet<BlobId>,
    batch: Vec<(usize, Vec<u8>)>,
    batch_bytes: usize,
    contents: Vec<Vec<Part>>,
    hardlinks: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Paths (relative to the current item) left out.
    exclude: Vec<Vec<Vec<u8>>>,
    summary: Summary,
    warnings: Vec<String>,
    /// The parent snapshot's root entries by name: what an item of the same name is
    /// compared with (unchanged files are not read again; changed ones are delta-coded
    /// against their former version).
    parent_root: HashMap<Vec<u8>, Entry>,
    /// Delta runs in the open pack and their members: indexed once the pack is.
    pending_members: Vec<(BlobId, Vec<(BlobId, u32)>)>,
    /// Packs handed to the writer but not indexed yet (see [`INDEX_PACKS`]).
    unindexed: Vec<crate::index::NewPack>,
    /// Writes sealed packs durably while the next one is filled.
    writer: Option<PackWriter>,
    /// Chunks stored inside delta runs by this backup.
    session_members: HashSet<BlobId>,
    /// Runs of the parent met as bases.
    parent_runs: HashMap<BlobId, std::sync::Arc<ParentRun>>,
    /// Read every file, unchanged or not (`BackupOptions::reread`).
    reread: bool,
    /// When the parent snapshot's backup started (0 without a parent).
    parent_started_ns: i64,
}

/// Packs a backup writes before it indexes them, in one write. Each index write is a short
/// write session with a flush of its own (see `index.rs`), 20-25 ms, which a backup of the
/// corpus tree (20 packs) paid per pack. Until indexed, a pack is known to this backup
/// (`session`) and to nobody else: no other backup deduplicates against it, and prune never
/// marks it; a backup killed before indexing them leaves packs that the next write-mode
/// open indexes (`Repo::sync_index`).
const INDEX_PACKS: usize = 8;

/// A pack for a backup to fill: room for its closing size and the blob that takes it past
/// (at most the longest chunk or delta run this repository's config allows).
fn new_pack(repo: &Repo) -> PackBuilder {
    let c = repo.config();
    let longest = (c.chunker_tree.max)
        .max(c.chunker_stream.max)
        .max(c.delta.map_or(0, |d| d.run_max));
    PackBuilder::sized(repo.keys(), c.pack_size as usize + longest as usize)
}

/// A thread that writes packs (atomically and durably, through the backend) while the
/// backup fills the next: writing and syncing a 16 MiB pack took 40-90 ms here, in which
/// no chunk was read or compressed. One pack is written at a time and the next waits to be
/// taken, so a backup holds at most two packs.
struct PackWriter {
    tx: Option<std::sync::mpsc::SyncSender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl PackWriter {
    fn start(backend: std::sync::Arc<dyn crate::backend::Backend>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(0);
        let thread = std::thread::spawn(move || {
            for (name, bytes) in rx {
                backend.write(&name, &bytes)?;
            }
            Ok(())
        });
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Hands a pack over; a write that failed before is reported here (or by `finish`).
    fn write(&mut self, name: String, bytes: Vec<u8>) -> Result<()> {
        let sent = self.tx.as_ref().expect("open").send((name, bytes));
        if sent.is_err() {
            // The thread ended on an error: that is the error.
            self.tx = None;
            self.join()?;
            return Err(Error::Invalid("the pack writer stopped".into()));
        }
        Ok(())
    }

    /// Waits until every pack handed over is durable.
    fn finish(mut self) -> Result<()> {
        self.tx = None;
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    }
}

/// Cuts chunks off `stream` until they hold `limit` bytes or the stream ends; with the
/// chunks, how it ended: `None` if it goes on, `Some(None)` at its end, `Some(Some(e))` on a
/// read error.
fn next_batch<R: Read>(
    stream: &mut crate::chunker::ChunkStream<'_, R>,
    limit: usize,
) -> (Vec<Vec<u8>>, Option<Option<std::io::Error>>) {
    let (mut batch, mut bytes) = (Vec::new(), 0);
    while bytes < limit {
        match stream.next_chunk() {
            Ok(Some(c)) => {
                bytes += c.len();
                batch.push(c);
            }
            Ok(None) => return (batch, Some(None)),
            Err(e) => return (batch, Some(Some(e))),
        }
    }
    (batch, None)
}

/// Reads and cuts `reader` on a thread of `scope`, `limit` bytes of chunks a batch, while
/// the caller stores the batches before: each batch goes through `prepare` on that thread,
/// then to the receiver with the read error that ended the stream, if one did. `waiting`
/// batches may wait to be taken. A closed receiver (the backup failed) stops the reading.
fn read_ahead<'scope, R, T>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    chunker: &'scope Chunker,
    reader: R,
    limit: usize,
    waiting: usize,
    prepare: impl Fn(Vec<Vec<u8>>) -> T + Send + 'scope,
) -> std::sync::mpsc::Receiver<(T, Option<std::io::Error>)>
where
    R: Read + Send + 'scope,
    T: Send + 'scope,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(waiting);
    scope.spawn(move || {
        let mut stream = chunker.stream(reader);
        loop {
            let (batch, end) = next_batch(&mut stream, limit);
            let last = end.is_some();
            if tx.send((prepare(batch), end.flatten())).is_err() || last {
                return;
            }
        }
    });
    rx
}

/// A run compressed: its id, header, length and stored form.
type EncodedRun = (BlobId, crate::delta::RunHeader, u32, Vec<u8>);

/// New chunks of a delta-coded stream, gathered into a run: their bytes end to end, ids
/// and lengths, and where the run starts in the stream.
#[derive(Default)]
struct OpenRun {
    bytes: Vec<u8>,
    members: Vec<(BlobId, u32)>,
    start: u64,
}

/// A run to be finished on another thread: its id, header (which names its prefix), bytes,
/// and where in the prefix it is expected to start.
struct RunJob {
    id: BlobId,
    header: crate::delta::RunHeader,
    bytes: Vec<u8>,
    hint: usize,
}

/// A run of the parent's, as a new run based on it sees it.
struct ParentRun {
    depth: u8,
    /// Whether it is dense (see [`DENSE_EDIT`]).
    dense: bool,
    len: u64,
    bases: Vec<(BlobId, u32)>,
    skip: u32,
    prefix_len: u32,
}

/// A run with an edit every `DENSE_EDIT` bytes or less is dense: most rows of its stretch
/// changed. Each level of a chain of such runs composes tens of thousands of stretches, so a
/// new run over one is compressed against what that run was compressed against instead, and
/// is one level deep there. That costs little: where most rows change in every revision, the
/// rows changed since the older version are mostly those changed since the newer one (on
/// the shared corpus, 18% more for two revisions back). The run's depth still counts
/// revisions, so `chain_max` still ends the chain.
const DENSE_EDIT: u64 = 512;

/// How many revisions back a run over dense runs may reach (counted in runs: a revision that
/// leaves the stretch alone writes none and is not counted). The rows changed since an older
/// version keep adding up: on the shared corpus a run two revisions back was 18% larger
/// than one over its parent, three back 31%, four back 45%, five back 57%. With 3, reading
/// any revision of a dense stretch goes through a third as many runs as revisions, at most
/// a third larger.
const DENSE_REACH: u8 = 3;

/// A piece of a [`DensePrefix`]: `bases`, of whose concatenation bytes `from .. to` are
/// wanted.
struct Piece {
    bases: Vec<(BlobId, u32)>,
    from: u64,
    to: u64,
}

/// The prefix [`Archiver::dense_prefix`] finds.
struct DensePrefix {
    bases: Vec<(BlobId, u32)>,
    skip: u32,
    prefix_len: u32,
    hint: usize,
}

/// The parent's version of a stream: its parts, where each starts, its length, and the
/// first part holding each chunk.
struct ParentFile<'p> {
    parts: &'p [Part],
    starts: Vec<u64>,
    len: u64,
    first: HashMap<BlobId, usize>,
    /// Every part holding a chunk that occurs more than once (a dump repeats blocks), in
    /// order.
    repeats: HashMap<BlobId, Vec<usize>>,
}

impl<'p> ParentFile<'p> {
    fn new(parts: &'p [Part]) -> Self {
        let mut starts = Vec::with_capacity(parts.len());
        let mut first = HashMap::new();
        let mut repeats: HashMap<BlobId, Vec<usize>> = HashMap::new();
        let mut at = 0u64;
        for (i, p) in parts.iter().enumerate() {
            starts.push(at);
            let f = *first.entry(p.id).or_insert(i);
            if f != i {
                repeats.entry(p.id).or_insert_with(|| vec![f]).push(i);
            }
            at += p.len as u64;
        }
        ParentFile {
            parts,
            starts,
            len: at,
            first,
            repeats,
        }
    }

    /// The part holding chunk `id` that starts nearest to offset `near`.
    fn nearest(&self, id: &BlobId, near: u64) -> Option<usize> {
        let Some(all) = self.repeats.get(id) else {
            return self.first.get(id).copied();
        };
        let k = all.partition_point(|&i| self.starts[i] < near);
        [k.checked_sub(1), (k < all.len()).then_some(k)]
            .into_iter()
            .flatten()
            .map(|j| all[j])
            .min_by_key(|&i| self.starts[i].abs_diff(near))
    }
}

/// Finishes a run: reads the parent's stretch it is put against (on every core, each plain
/// chunk a chain composes it from only once; the repository keeps the plain chunks lately
/// read, so the stretch the next run's prefix shares with this one is not decoded again),
/// finds its edits and compresses them.
fn finish_run(repo: &Repo, job: RunJob, level: i32) -> Result<EncodedRun> {
    let h = &job.header;
    let plan = crate::delta::prefix_plan(&h.bases, h.skip, h.prefix_len);
    let prefix = repo.base_prefix(&h.bases, &plan)?;
    let enc = crate::delta::encode(h, &job.bytes, &prefix, job.hint, level)?;
    Ok((job.id, job.header, job.bytes.len() as u32, enc))
}

/// How long before the parent's backup started a file must have last changed for its size,
/// times and inode to be trusted.
const RACY_NS: i64 = 2_000_000_000;

/// Runs being finished on other threads may hold this many bytes (runs and prefixes) before
/// the stream waits for the oldest, unless one run alone holds them.
const RUNS_HELD: usize = 16 << 20;

/// Runs finished at once, at most (many small runs would each have a thread).
const RUNS_AT_ONCE: usize = 4;

impl<'r> Archiver<'r> {
    fn new(repo: &'r Repo, progress: &'r dyn Progress) -> Result<Self> {
        Ok(Self {
            repo,
            progress,
            tree_chunker: repo.tree_chunker()?,
            stream_chunker: repo.stream_chunker()?,
            level: repo.config().zstd_level,
            pack: None,
            session: HashSet::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            contents: Vec::new(),
            hardlinks: HashMap::new(),
            exclude: Vec::new(),
            summary: Summary::default(),
            warnings: Vec::new(),
            parent_root: HashMap::new(),
            pending_members: Vec::new(),
            unindexed: Vec::new(),
            writer: None,
            session_members: HashSet::new(),
            parent_runs: HashMap::new(),
            reread: false,
            parent_started_ns: 0,
        })
    }

    fn warn(&mut self, msg: String) {
        self.progress.warn(&msg);
        self.warnings.push(msg);
        self.summary.skipped += 1;
    }

    /// One filesystem entry; `None` when it was skipped with a warning.
    /// `was` is the parent snapshot's entry of the same path, if any.
    fn entry(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        rel: &mut Vec<Vec<u8>>,
        was: Option<&Entry>,
    ) -> Result<Option<(Entry, Option<usize>)>> {
        let md = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let ft = md.file_type();
        let mut entry = Entry {
            name,
            node: Node::Fifo,
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
            size: 0,
            xattrs: fsmeta::read_xattrs(path),
        };
        let mut slot = None;
        if ft.is_dir() {
            let was = match was.map(|w| &w.node) {
                Some(Node::Dir(id)) => Some(*id),
                _ => None,
            };
            let id = match self.dir(path, rel, was)? {
                Some(id) => id,
                None => return Ok(None),
            };
            entry.node = Node::Dir(id);
            self.summary.dirs += 1;
        } else if ft.is_file() {
            entry.size = md.size();
            if md.nlink() > 1 {
                if let Some(first) = self.hardlinks.get(&(md.dev(), md.ino())) {
                    entry.node = Node::HardLink(first.clone());
                    self.summary.others += 1;
                    return Ok(Some((entry, None)));
                }
                self.hardlinks.insert((md.dev(), md.ino()), rel.clone());
            }
            self.summary.files += 1;
            if let Some(parts) = self.unchanged(&entry, was)? {
                // Same size, times and inode as in the parent: its chunks, not read again.
                self.summary.bytes += entry.size;
                self.summary.unchanged_files += 1;
                entry.node = Node::File(parts);
                return Ok(Some((entry, None)));
            }
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    self.summary.files -= 1;
                    self.hardlinks.remove(&(md.dev(), md.ino()));
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            let chunker = self.tree_chunker.clone();
            let read = match was.and_then(|w| self.delta_parent(w, entry.size)) {
                Some(p) => self.delta_data(file, &chunker, &p)?,
                None => self.data(file, &chunker)?,
            };
            match read {
                Ok((s, n)) => {
                    entry.size = n;
                    slot = Some(s);
                }
                Err(e) => {
                    self.summary.files -= 1;
                    self.hardlinks.remove(&(md.dev(), md.ino()));
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            }
            entry.node = Node::File(Vec::new());
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(t) => entry.node = Node::Symlink(t.as_os_str().as_bytes().to_vec()),
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            }
            self.summary.others += 1;
        } else if ft.is_char_device() {
            entry.node = Node::CharDevice(md.rdev());
            self.summary.others += 1;
        } else if ft.is_block_device() {
            entry.node = Node::BlockDevice(md.rdev());
            self.summary.others += 1;
        } else if ft.is_fifo() {
            entry.node = Node::Fifo;
            self.summary.others += 1;
        } else {
            self.warn(format!(
                "{}: sockets are not stored; skipped",
                path.display()
            ));
            return Ok(None);
        }
        Ok(Some((entry, slot)))
    }

    /// A directory's tree id; `None` when it cannot be read (warned).
    /// `was` is the parent snapshot's tree of the same directory, if any.
    fn dir(
        &mut self,
        path: &Path,
        rel: &mut Vec<Vec<u8>>,
        was: Option<BlobId>,
    ) -> Result<Option<BlobId>> {
        let rd = match std::fs::read_dir(path) {
            Ok(rd) => rd,
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                return Ok(None);
            }
        };
        let mut names: Vec<OsString> = Vec::new();
        for ent in rd {
            match ent {
                Ok(e) => names.push(e.file_name()),
                Err(e) => self.warn(format!("{}: {e}", path.display())),
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut before: HashMap<Vec<u8>, Entry> = HashMap::new();
        if let Some(id) = was {
            match self.repo.load_tree(&id) {
                Ok(t) => before.extend(t.entries.into_iter().map(|e| (e.name.clone(), e))),
                // Not worth failing the backup for: everything below is read again.
                Err(e) => self.progress.warn(&format!(
                    "{}: the parent snapshot's listing cannot be read ({e}); reading every file",
                    path.display()
                )),
            }
        }
        let mut entries = Vec::with_capacity(names.len());
        for n in names {
            let child = path.join(&n);
            rel.push(n.as_bytes().to_vec());
            if self.exclude.iter().any(|x| x.as_slice() == &rel[1..]) {
                rel.pop();
                continue;
            }
            let e = self.entry(&child, n.as_bytes().to_vec(), rel, before.get(n.as_bytes()));
            rel.pop();
            if let Some(e) = e? {
                entries.push(e);
            }
        }
        self.finish_dir(entries).map(Some)
    }

    /// Resolves the pending file contents of `entries` and stores their tree.
    fn finish_dir(&mut self, mut entries: Vec<(Entry, Option<usize>)>) -> Result<BlobId> {
        if entries.iter().any(|(_, s)| s.is_some()) {
            self.flush()?;
        }
        entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let mut tree = Tree {
            entries: Vec::with_capacity(entries.len()),
        };
        for (mut e, slot) in entries {
            if let Some(s) = slot {
                e.node = Node::File(std::mem::take(&mut self.contents[s]));
            }
            tree.entries.push(e);
        }
        let data = tree.encode();
        if data.len() > blob::MAX_BLOB_LEN as usize {
            return Err(Error::Invalid(format!(
                "a directory of {} entries encodes to {} bytes, more than a tree blob may hold",
                tree.entries.len(),
                data.len()
            )));
        }
        let id = self.repo.keys().tree_id(&data);
        if !self.known(&id)? {
            let enc = blob::encode(&data, self.level);
            self.session.insert(id);
            self.add_blob(id, BlobKind::Tree, data.len() as u32, &enc)?;
        }
        Ok(id)
    }

    /// The stream as a root entry.
    fn stream(&mut self, s: Stream) -> Result<(Entry, Option<usize>)> {
        let now = crate::now_ns();
        let chunker = self.stream_chunker.clone();
        let parent = self
            .parent_root
            .get(s.name.as_bytes())
            .and_then(|e| self.delta_parent(e, u64::MAX));
        let (slot, size) = match s.source {
            StreamSource::Reader(r) => match parent {
                Some(p) => self.delta_data(r, &chunker, &p)?,
                None => self.data_ahead(r, &chunker)?,
            }
            .map_err(|e| Error::io("<stdin>", e))?,
            StreamSource::Command(cmd) => {
                let mut child = spawn(&cmd)?;
                let cmd = cmd.display();
                let out = child.stdout.take().expect("piped");
                let read = match parent {
                    Some(p) => self.delta_data(out, &chunker, &p),
                    None => self.data_ahead(out, &chunker),
                };
                let status = child.wait().map_err(|e| Error::CommandFailed {
                    command: cmd.clone(),
                    why: e.to_string(),
                })?;
                let read = read?;
                if !status.success() {
                    return Err(Error::CommandFailed {
                        command: cmd,
                        why: crate::command::describe_status(status),
                    });
                }
                read.map_err(|e| Error::CommandFailed {
                    command: cmd,
                    why: format!("reading its output: {e}"),
                })?
            }
        };
        self.summary.files += 1;
        let entry = Entry {
            name: s.name.into_bytes(),
            node: Node::File(Vec::new()),
            mode: 0o100600,
            // SAFETY: getuid/getgid have no preconditions.
            uid: unsafe { libc::getuid() },
            // SAFETY: as above.
            gid: unsafe { libc::getgid() },
            mtime_ns: now,
            ctime_ns: now,
            ino: 0,
            size,
            xattrs: Vec::new(),
        };
        Ok((entry, Some(slot)))
    }

    /// Chunks a reader into the batch. The outer error is the repository's; the inner one is
    /// the source's (a file that could not be read is skipped, the repository is fine).
    fn data<R: Read>(
        &mut self,
        reader: R,
        chunker: &Chunker,
    ) -> Result<std::io::Result<(usize, u64)>> {
        let slot = self.new_slot();
        let mut stream = chunker.stream(reader);
        let mut total = 0u64;
        loop {
            match stream.next_chunk() {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    self.add_chunk(slot, chunk)?;
                }
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            }
        }
        self.summary.bytes += total;
        Ok(Ok((slot, total)))
    }

    /// A slot for the parts of a file about to be read (see `contents`).
    fn new_slot(&mut self) -> usize {
        self.contents.push(Vec::new());
        self.contents.len() - 1
    }

    /// Adds a chunk of the file in `slot` to the batch, which is stored once it is full.
    fn add_chunk(&mut self, slot: usize, chunk: Vec<u8>) -> Result<()> {
        self.progress.bytes(chunk.len() as u64);
        self.batch_bytes += chunk.len();
        self.batch.push((slot, chunk));
        if self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// [`Archiver::data`] with the reading and cutting on a thread of its own, a batch ahead,
    /// for streams (dumps): the batch before is hashed, compressed and sealed meanwhile. In
    /// a first backup of the corpus dump, cutting waited for compression and compression for
    /// cutting, and the two cores were 1.5 busy; with this, 1.23 -> 1.04 s. The next batch
    /// waits to be taken, so one batch more is held than by `data`. Not for a tree's large
    /// files: the corpus tree backed up 6% faster that way but held 27 MB more.
    fn data_ahead<R: Read + Send>(
        &mut self,
        reader: R,
        chunker: &Chunker,
    ) -> Result<std::io::Result<(usize, u64)>> {
        let slot = self.new_slot();
        let mut total = 0u64;
        let mut failed = None;
        std::thread::scope(|scope| -> Result<()> {
            for (batch, error) in read_ahead(scope, chunker, reader, BATCH_BYTES, 0, |b| b) {
                for chunk in batch {
                    total += chunk.len() as u64;
                    self.add_chunk(slot, chunk)?;
                }
                if let Some(e) = error {
                    failed = Some(e);
                    break;
                }
            }
            Ok(())
        })?;
        if let Some(e) = failed {
            return Ok(Err(e));
        }
        self.summary.bytes += total;
        Ok(Ok((slot, total)))
    }

    /// The parent's chunks of a file whose size, times and inode are those of `was` (the
    /// parent's entry), if every one of them is still stored; `None` means: read it.
    fn unchanged(&self, now: &Entry, was: Option<&Entry>) -> Result<Option<Vec<Part>>> {
        // (With `reread`, no entry of the parent reaches here: its trees are not walked.)
        let Some(was) = was else { return Ok(None) };
        let Node::File(parts) = &was.node else {
            return Ok(None);
        };
        // A file changed shortly before the parent was taken may change again with the same
        // size, times and inode: the kernel's file clock ticks in milliseconds, and a deleted
        // file's inode is soon used again. Only files older than that are trusted (git's
        // "racy clean" rule).
        if now.ctime_ns >= self.parent_started_ns.saturating_sub(RACY_NS)
            || (was.size, was.mtime_ns, was.ctime_ns, was.ino)
                != (now.size, now.mtime_ns, now.ctime_ns, now.ino)
            || parts.iter().map(|p| p.len as u64).sum::<u64>() != now.size
        {
            return Ok(None);
        }
        for p in parts {
            if !self.known(&p.id)? {
                return Ok(None);
            }
        }
        Ok(Some(parts.clone()))
    }

    /// The parts of `was` (the parent's entry of a file now `size` bytes) to delta-code the
    /// new version against: when delta runs are on and both versions are large enough.
    fn delta_parent(&self, was: &Entry, size: u64) -> Option<Vec<Part>> {
        let d = self.repo.config().delta?;
        let Node::File(parts) = &was.node else {
            return None;
        };
        let len: u64 = parts.iter().map(|p| p.len as u64).sum();
        (len >= d.min_file && size >= d.min_file).then(|| parts.clone())
    }

    fn known(&self, id: &BlobId) -> Result<bool> {
        Ok(self.stored_as(id)?.is_some())
    }

    /// How a chunk is already stored (the part kind to name it with), by this backup or
    /// before; `None` if it is new. One index lookup.
    fn stored_as(&self, id: &BlobId) -> Result<Option<u8>> {
        if self.session_members.contains(id) {
            return Ok(Some(PART_IN_RUN));
        }
        if self.session.contains(id) {
            return Ok(Some(PART_CHUNK));
        }
        self.repo.index().part_kind(id)
    }

    /// Hashes the batch, stores its new chunks, and appends parts to their files.
    fn flush(&mut self) -> Result<()> {
        let items = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if items.is_empty() {
            return Ok(());
        }
        let keys = self.repo.keys();
        let ids: Vec<BlobId> = items.par_iter().map(|(_, d)| keys.chunk_id(d)).collect();
        let mut fresh = Vec::new();
        let mut kinds = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let kind = self.stored_as(id)?;
            if kind.is_none() {
                self.session.insert(*id);
                fresh.push(i);
            }
            kinds.push(kind.unwrap_or(PART_CHUNK));
        }
        let level = self.level;
        let encoded: Vec<(usize, Vec<u8>)> = fresh
            .par_iter()
            .map(|&i| (i, blob::encode(&items[i].1, level)))
            .collect();
        // Seal in parallel too: slots are handed out in order, pack by pack, then each group
        // is sealed across the cores and appended in slot order.
        let pack_size = self.repo.config().pack_size as usize;
        let mut next = 0;
        while next < encoded.len() {
            let pack = self.pack.get_or_insert_with(|| new_pack(self.repo));
            let (base, key) = (pack.next_slot(), pack.key().clone());
            let mut size = pack.len();
            let start = next;
            let room = crate::pack::MAX_ENTRIES - pack.entries().len();
            while next < encoded.len() && (next == start || size < pack_size) && next - start < room
            {
                size += encoded[next].1.len() + crate::crypto::TAG_LEN;
                next += 1;
            }
            let group = &encoded[start..next];
            let sealed: Vec<Vec<u8>> = group
                .par_iter()
                .enumerate()
                .map(|(k, (i, enc))| {
                    blob::seal(&key, base + k as u32, &ids[*i], BlobKind::Data, enc)
                })
                .collect();
            for ((i, _), s) in group.iter().zip(&sealed) {
                let raw = items[*i].1.len() as u32;
                pack.push_sealed(ids[*i], BlobKind::Data, raw, s);
                self.summary.new_blobs += 1;
                self.summary.new_raw_bytes += raw as u64;
            }
            if pack.len() >= pack_size || pack.entries().len() >= crate::pack::MAX_ENTRIES {
                self.finish_pack()?;
            }
        }
        for (i, (slot, data)) in items.iter().enumerate() {
            self.contents[*slot].push(Part {
                kind: kinds[i],
                id: ids[i],
                len: data.len() as u32,
            });
        }
        Ok(())
    }

    /// Reads the parent snapshot's root entries.
    /// A parent that cannot be read (forgotten meanwhile, or damaged) only means that
    /// everything is read and stored as plain chunks: the backup goes on without it.
    fn load_parent(&mut self, id: &SnapshotId) -> Result<bool> {
        let read = self
            .repo
            .load_snapshot(id)
            .and_then(|snap| Ok((self.repo.load_tree(&snap.tree)?, snap)));
        let (root, snap) = match read {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(false),
            Err(e) => {
                self.progress.warn(&format!(
                    "the parent snapshot {} cannot be read ({e}); reading every file",
                    id.short()
                ));
                return Ok(false);
            }
        };
        for e in root.entries {
            self.parent_root.insert(e.name.clone(), e);
        }
        self.parent_started_ns = snap
            .time_ns
            .saturating_sub((snap.summary.duration_ms as i64).saturating_mul(1_000_000));
        Ok(true)
    }

    /// How deep a chunk is: 0 on its own, else the depth of the run holding it.
    fn chunk_depth(&mut self, id: &BlobId) -> Result<u8> {
        Ok(match self.repo.index().member(id)? {
            Some((run, _, _)) => self.parent_run(&run)?.depth,
            None => 0,
        })
    }

    /// What a backup needs to know of a run of the parent's.
    fn parent_run(&mut self, run: &BlobId) -> Result<std::sync::Arc<ParentRun>> {
        if let Some(r) = self.parent_runs.get(run) {
            return Ok(r.clone());
        }
        let (h, edits) = self.repo.run_header_edits(run)?;
        let len = h.run_len();
        let r = std::sync::Arc::new(ParentRun {
            depth: h.depth,
            dense: edits.is_some_and(|n| n.saturating_mul(DENSE_EDIT) >= len),
            len,
            bases: h.bases,
            skip: h.skip,
            prefix_len: h.prefix_len,
        });
        self.parent_runs.insert(*run, r.clone());
        Ok(r)
    }

    /// The prefix of a new run whose stretch of the parent, `lo .. hi` (in which `pred` is
    /// where the run is expected), lies partly in dense runs (see [`DENSE_EDIT`]): each
    /// dense run's part is replaced by the stretch of its own prefix that held those bytes,
    /// the parent's other parts kept. `None` when no part is in a dense run, or the prefix
    /// would be too large.
    fn dense_prefix(
        &mut self,
        parent: &ParentFile,
        range: std::ops::Range<usize>,
        members: &[Option<(BlobId, u32)>],
        (lo, hi, pred): (u64, u64, u64),
        slack: u64,
    ) -> Result<Option<DensePrefix>> {
        // A part stored inside a run, and where.
        let member =
            |k: usize| members[k - range.start].filter(|_| parent.parts[k].kind == PART_IN_RUN);
        // The new prefix as pieces: the bases each takes whole, and the bytes of their
        // concatenation it wants. Where the run is expected: a piece and an offset in it.
        let mut pieces: Vec<Piece> = Vec::new();
        let mut hint: Option<(usize, u64)> = None;
        let mut skipped = false;
        let mut k = range.start;
        while k < range.end {
            let (p, at) = (&parent.parts[k], parent.starts[k]);
            let end_k = at + p.len as u64;
            let over = match member(k) {
                Some((run, off)) => {
                    let r = self.parent_run(&run)?;
                    r.dense.then_some((run, off, r))
                }
                None => None,
            };
            let from_part = |hint: &mut Option<(usize, u64)>, pieces: &mut Vec<Piece>| {
                if hint.is_none() && pred < end_k {
                    *hint = Some((pieces.len(), pred.saturating_sub(at)));
                }
                pieces.push(Piece {
                    bases: vec![(p.id, p.len)],
                    from: lo.saturating_sub(at),
                    to: (hi - at).min(p.len as u64),
                });
            };
            let Some((run, off, r)) = over else {
                from_part(&mut hint, &mut pieces);
                k += 1;
                continue;
            };
            // The parts that follow in the same run, and the run's bytes `a .. b` wanted.
            let mut end = k + 1;
            while end < range.end && member(end).is_some_and(|(next, _)| next == run) {
                end += 1;
            }
            let span_end = parent.starts[end - 1] + parent.parts[end - 1].len as u64;
            let a = off as u64 + lo.saturating_sub(at);
            let b = (off as u64 + hi.min(span_end) - at).min(r.len);
            // Where the run's own prefix held them: its start was expected `shift` bytes in
            // (`slack`, unless that prefix was cut at an end of its version), widened by
            // half the slack each way; in the run's concatenated bases.
            let shift = ((r.prefix_len as u64).saturating_sub(r.len) / 2).min(slack);
            let from = r.skip as u64 + (a + shift).saturating_sub(slack / 2);
            let to =
                (r.skip as u64 + b + shift + slack / 2).min(r.skip as u64 + r.prefix_len as u64);
            let mut bases = Vec::new();
            let (mut base_at, mut first_at) = (0u64, None);
            for base in &r.bases {
                let base_end = base_at + base.1 as u64;
                if base_end > from && base_at < to {
                    first_at.get_or_insert(base_at);
                    bases.push(*base);
                }
                base_at = base_end;
            }
            // How many revisions back the bases taken are: the run's depth less that of the
            // shallowest (each read from its run's header, not followed down, so a looping
            // chain ends here). The shallowest, not the deepest: a run that was itself over a
            // sparse stretch beside a dense one holds bases of both, and the deep ones once
            // hid plain chunks four and five revisions back. A chunk stored on its own counts
            // as depth 0 whatever revision stored it, so the reach is never underrated.
            let (mut shallowest, mut deepest) = (u8::MAX, 0u8);
            for base in &bases {
                let d = self.chunk_depth(&base.0)?;
                (shallowest, deepest) = (shallowest.min(d), deepest.max(d));
            }
            let reach = r.depth.saturating_sub(shallowest);
            // Every base shallower than the run (else the index is damaged: a base inside its
            // own run), and none too far back.
            let fits = deepest < r.depth && reach < DENSE_REACH;
            let Some(first_at) = first_at.filter(|_| fits) else {
                // Its prefix held nothing there (it was shorter than the run), or the bases
                // are too many revisions back (or not shallower, in a damaged index): keep
                // the part.
                from_part(&mut hint, &mut pieces);
                k += 1;
                continue;
            };
            if hint.is_none() && pred < span_end {
                let want = r.skip as u64 + off as u64 + pred.saturating_sub(at) + shift;
                hint = Some((pieces.len(), want.saturating_sub(first_at)));
            }
            pieces.push(Piece {
                bases,
                from: from - first_at,
                to: to - first_at,
            });
            skipped = true;
            k = end;
        }
        if !skipped {
            return Ok(None);
        }
        // One skip before the first piece and one end after the last: the pieces between
        // give their bases whole.
        let skip = pieces[0].from;
        let (mut bases, mut total, mut end, mut hint_at) = (Vec::new(), 0u64, 0u64, skip);
        for (i, piece) in pieces.iter().enumerate() {
            if let Some((h, off)) = hint
                && h == i
            {
                hint_at = total + off;
            }
            end = total + piece.to;
            total += piece.bases.iter().map(|b| b.1 as u64).sum::<u64>();
            bases.extend_from_slice(&piece.bases);
        }
        let prefix_len = end.saturating_sub(skip);
        if prefix_len == 0
            || prefix_len > crate::delta::MAX_PREFIX as u64
            || bases.len() > crate::delta::MAX_BASES
        {
            return Ok(None);
        }
        Ok(Some(DensePrefix {
            bases,
            skip: skip as u32,
            prefix_len: prefix_len as u32,
            hint: (hint_at.saturating_sub(skip)).min(prefix_len) as usize,
        }))
    }

    /// Chunks a stream that has a version in the parent: chunks the parent (or anything
    /// else) already holds are referenced; consecutive new chunks are stored as delta runs
    /// against the stretch of the parent's version where they are predicted to be, from the
    /// last chunk both share (see `delta.rs`).
    ///
    /// Three things go on at once: the stream is read, cut and hashed a batch ahead on one
    /// thread; this one looks chunks up and gathers runs; and each run is finished on a
    /// thread of its own (its stretch of the parent read, its edits found, compressed), the
    /// runs done added to the pack in order.
    fn delta_data<R: Read + Send>(
        &mut self,
        reader: R,
        chunker: &Chunker,
        parent: &[Part],
    ) -> Result<std::io::Result<(usize, u64)>> {
        // Other files' chunks in the batch go first, so each file's parts stay in order.
        self.flush()?;
        let slot = self.new_slot();
        let parent = ParentFile::new(parent);
        let mut total = 0u64;
        // (offset in the new stream, offset in the parent) just after the last shared chunk.
        let mut anchor = (0u64, 0u64);
        // Chunks already stored that were met in this stream.
        let mut met: HashSet<BlobId> = HashSet::new();
        let mut run = OpenRun::default();
        let _fewer = self.repo.fewer_composed();
        let run_max = self.repo.config().delta.map_or(0, |d| d.run_max) as u64;
        let slack = self.repo.config().delta.map_or(0, |d| d.slack) as u64;
        let level = self.repo.config().delta.map_or(3, |d| d.level);
        // A read error ends the stream, but what was read is still stored as usual: its
        // chunks already count as stored for this backup.
        let mut failed = None;
        let repo = self.repo;
        std::thread::scope(|scope| -> Result<()> {
            // The chunks are hashed on the reading thread too, ahead of the run predictions.
            let rx = read_ahead(scope, chunker, reader, READ_AHEAD_BYTES, 1, move |batch| {
                let keys = repo.keys();
                let ids: Vec<BlobId> = batch.par_iter().map(|c| keys.chunk_id(c)).collect();
                (ids, batch)
            });
            // Runs being finished, oldest first, and the bytes they hold (run and prefix).
            let mut jobs = std::collections::VecDeque::new();
            let mut held = 0usize;
            // Ends the open run (if any): hands it to a thread of its own, then adds the runs
            // done to the pack, in order, waiting for the oldest while too much is held (or
            // for all, at the end). One run may hold more than the budget on its own: a run
            // of 8 MiB with its prefix does, and waiting for it at once left a core idle while
            // it was finished.
            let mut close = |this: &mut Self, run: &mut OpenRun, anchor, end: bool| -> Result<()> {
                let mut open = std::mem::take(run);
                // The buffer was sized for the longest run: give back what this one left.
                open.bytes.shrink_to_fit();
                if let Some(job) = this.store_run(slot, open, anchor, &parent)? {
                    let n = job.bytes.len() + job.header.prefix_len as usize;
                    held += n;
                    jobs.push_back((scope.spawn(move || finish_run(repo, job, level)), n));
                }
                while let Some((oldest, _)) = jobs.front()
                    && (end
                        || (held > RUNS_HELD && jobs.len() > 1)
                        || jobs.len() > RUNS_AT_ONCE
                        || oldest.is_finished())
                {
                    let (oldest, n) = jobs.pop_front().expect("one");
                    held -= n;
                    let (id, h, len, enc) = oldest
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                    this.pending_members.push((id, h.members));
                    this.add_blob(id, BlobKind::DeltaRun, len, &enc)?;
                }
                Ok(())
            };
            for ((ids, batch), error) in rx {
                for (id, chunk) in ids.into_iter().zip(batch) {
                    let len = chunk.len() as u64;
                    self.progress.bytes(len);
                    if let Some(kind) = self.stored_as(&id)? {
                        close(self, &mut run, anchor, false)?;
                        self.contents[slot].push(Part {
                            kind,
                            id,
                            len: len as u32,
                        });
                        // Where the chunk would be in the parent if nothing moved: of the
                        // chunks that occur more than once, the nearest copy is this one. A
                        // chunk met before in this stream is in a block the stream repeats,
                        // and its only copy in the parent, if further than a run's prefix
                        // reaches, is the other block's: that moves nothing.
                        let near = anchor.1 + (total - anchor.0);
                        let again = !met.insert(id) && !parent.repeats.contains_key(&id);
                        if let Some(i) = parent.nearest(&id, near)
                            && (!again || parent.starts[i].abs_diff(near) <= slack)
                        {
                            anchor = (total + len, parent.starts[i] + parent.parts[i].len as u64);
                        }
                    } else {
                        if !run.members.is_empty() && run.bytes.len() as u64 + len > run_max {
                            close(self, &mut run, anchor, false)?;
                        }
                        if run.members.is_empty() {
                            run.start = total;
                            // At its longest at once: growing it copied it over and over.
                            run.bytes.reserve_exact(run_max as usize);
                        }
                        // A chunk met twice in the same run is stored once (the second is
                        // known).
                        self.session.insert(id);
                        run.bytes.extend_from_slice(&chunk);
                        run.members.push((id, chunk.len() as u32));
                    }
                    total += len;
                }
                failed = error;
            }
            close(self, &mut run, anchor, true)
        })?;
        if let Some(e) = failed {
            return Ok(Err(e));
        }
        self.summary.bytes += total;
        Ok(Ok((slot, total)))
    }

    /// Stores consecutive new chunks as one delta run against the parent's predicted
    /// stretch (handed back, to be finished on another thread), or as plain chunks when
    /// there is no stretch or the chain would get too deep.
    fn store_run(
        &mut self,
        slot: usize,
        run: OpenRun,
        anchor: (u64, u64),
        parent: &ParentFile,
    ) -> Result<Option<RunJob>> {
        if run.members.is_empty() {
            return Ok(None);
        }
        let d = self.repo.config().delta.expect("delta runs are on");
        let run_len = run.bytes.len() as u64;
        let (parts, starts, parent_len) = (parent.parts, &parent.starts, parent.len);
        let pred = (anchor.1 + (run.start - anchor.0)).min(parent_len);
        let lo = pred.saturating_sub(d.slack as u64);
        let hi = (pred + run_len + d.slack as u64)
            .min(parent_len)
            .min(lo + crate::delta::MAX_PREFIX as u64);
        let first = starts.partition_point(|s| *s <= lo).saturating_sub(1);
        let last = starts.partition_point(|s| *s < hi);
        // Where the parent ends before half the run (a dump that grew, or whose parent was
        // another, smaller one), most of the run has nothing to be copied from: as a run it
        // would be literals, no smaller than its chunks and costly to keep composed.
        let short = hi <= lo || (hi - lo) * 2 < run_len;
        // The run each part of the stretch lies in, if any, and where: looked up once.
        let mut members = Vec::new();
        let mut depth = 0u8;
        if !short {
            for p in &parts[first..last] {
                let m = self.repo.index().member(&p.id)?;
                if let Some((run, _, _)) = m {
                    depth = depth.max(self.parent_run(&run)?.depth);
                }
                members.push(m.map(|(run, off, _)| (run, off)));
            }
        }
        if short || depth >= d.chain_max || last - first > crate::delta::MAX_BASES {
            // A re-base: these chunks are stored whole, and chains through them end here.
            let mut at = 0usize;
            let chunks: Vec<&[u8]> = run
                .members
                .iter()
                .map(|(_, len)| {
                    at += *len as usize;
                    &run.bytes[at - *len as usize..at]
                })
                .collect();
            let level = self.level;
            let encoded: Vec<Vec<u8>> = chunks.par_iter().map(|c| blob::encode(c, level)).collect();
            for ((id, len), enc) in run.members.iter().zip(encoded) {
                self.add_blob(*id, BlobKind::Data, *len, &enc)?;
                self.contents[slot].push(Part {
                    kind: PART_CHUNK,
                    id: *id,
                    len: *len,
                });
            }
            return Ok(None);
        }
        let (bases, skip, prefix_len, hint) = match self.dense_prefix(
            parent,
            first..last,
            &members,
            (lo, hi, pred),
            d.slack as u64,
        )? {
            Some(p) => (p.bases, p.skip, p.prefix_len, p.hint),
            None => (
                parts[first..last].iter().map(|p| (p.id, p.len)).collect(),
                (lo - starts[first]) as u32,
                (hi - lo) as u32,
                (pred - lo) as usize,
            ),
        };
        let run_id = self.repo.keys().run_id(&run.bytes);
        let header = crate::delta::RunHeader {
            depth: depth + 1,
            members: run.members,
            bases,
            skip,
            prefix_len,
        };
        for (id, len) in &header.members {
            self.session_members.insert(*id);
            self.contents[slot].push(Part {
                kind: PART_IN_RUN,
                id: *id,
                len: *len,
            });
        }
        if !self.known(&run_id)? {
            self.session.insert(run_id);
            return Ok(Some(RunJob {
                id: run_id,
                header,
                bytes: run.bytes,
                hint,
            }));
        }
        if !self.session.contains(&run_id) {
            // Stored before (its chunks were not known, so its member records are missing,
            // say an index written by an older process): record them now.
            self.repo.index().add_members(&run_id, &header.members)?;
        }
        Ok(None)
    }

    fn add_blob(&mut self, id: BlobId, kind: BlobKind, raw_len: u32, encoded: &[u8]) -> Result<()> {
        let pack = self.pack.get_or_insert_with(|| new_pack(self.repo));
        pack.add(id, kind, raw_len, encoded);
        self.summary.new_blobs += 1;
        self.summary.new_raw_bytes += raw_len as u64;
        if pack.len() >= self.repo.config().pack_size as usize
            || pack.entries().len() >= crate::pack::MAX_ENTRIES
        {
            self.finish_pack()?;
        }
        Ok(())
    }

    /// Writes the open pack durably, then indexes it.
    fn finish_pack(&mut self) -> Result<()> {
        let Some(pack) = self.pack.take() else {
            return Ok(());
        };
        if pack.is_empty() {
            return Ok(());
        }
        let (id, bytes, entries) = pack.finish();
        let size = bytes.len() as u64;
        let backend = self.repo.backend();
        self.writer
            .get_or_insert_with(|| PackWriter::start(backend.clone()))
            .write(pack_name(&id), bytes)?;
        self.unindexed.push(crate::index::NewPack {
            id,
            size,
            entries,
            runs: std::mem::take(&mut self.pending_members),
        });
        self.summary.added_bytes += size;
        if self.unindexed.len() >= INDEX_PACKS {
            self.index_packs()?;
        }
        Ok(())
    }

    /// Indexes the packs written since the last time, in one write, once they are durable.
    fn index_packs(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            w.finish()?;
        }
        if self.unindexed.is_empty() {
            return Ok(());
        }
        self.repo.index().add_packs(&self.unindexed)?;
        self.unindexed.clear();
        Ok(())
    }
}

/// Starts a command with its standard output piped.
pub fn spawn(cmd: &CommandLine) -> Result<Child> {
    cmd.command()?
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::CommandFailed {
            command: cmd.display(),
            why: format!("cannot start: {e}"),
        })
}
