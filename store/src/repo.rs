//! An open repository: keys, config, backend and index, and the write ordering that keeps
//! them consistent. Spec: `format-spec/01-layout.md`.
//!
//! Write ordering (the only place it is enforced):
//! 1. a pack is written whole, fsync'd and renamed into `packs/` before anything refers to it;
//! 2. only then are its blobs added to the index;
//! 3. a snapshot file is written last, after every blob its trees reach is in a durable pack.
//!
//! A crash between 1 and 2 leaves a pack the index does not know; opening for writing finds it
//! and indexes it, so the next backup reuses it. The index is a cache: `rebuild_index` makes
//! it again from pack tables and snapshot files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, LocalBackend};
use crate::blob::{self, BlobKind, Bytes};
use crate::chunker::Chunker;
use crate::config::{Config, KdfParams};
use crate::crypto::{Keys, MasterKey, ObjectKey, random_array};
use crate::envelope::HEADER_LEN;
use crate::error::{Error, Result};
use crate::id::{BlobId, IdMap, IdSet, PackId, SnapshotId};
use crate::index::{Index, Location};
use crate::keyfile;
use crate::lock::{self, Lock};
use crate::pack;
use crate::snapshot::Snapshot;
use crate::tree::Tree;

/// How a repository is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reads only; the index is opened read-only and other processes may write meanwhile.
    Read,
    /// Writes: creates the index if it is missing and brings it up to date with the files.
    Write,
    /// Keys and config only, no index (key management works while others write).
    Keys,
}

/// The file name of a pack.
pub fn pack_name(id: &PackId) -> String {
    let h = id.to_hex();
    format!("packs/{}/{}", &h[..2], h)
}

/// An open repository.
pub struct Repo {
    backend: Arc<dyn Backend>,
    root: PathBuf,
    keys: Keys,
    master: MasterKey,
    /// Generation keys (see `key rotate`), oldest first.
    generations: Vec<MasterKey>,
    config: Config,
    index: Option<Index>,
    key_name: String,
    pack_keys: Mutex<HashMap<PackId, ObjectKey>>,
    /// Delta runs decoded lately, newest last (restoring a dump reads each run's chunks in
    /// turn, and a run's bases are often chunks of the run before).
    runs: Mutex<Vec<(BlobId, u8, RunBytes)>>,
    /// Where the plain base chunks of composed runs are (filled while composing).
    base_locs: Mutex<IdMap<BlobId, Location>>,
    /// Plain chunks read lately to put chunks of runs together.
    plain_kept: Mutex<Vec<(BlobId, Arc<Vec<u8>>)>>,
    /// The slots of the plain chunks reads under way need (see [`PlainReads::new`]).
    plain_reading: Mutex<IdMap<BlobId, std::sync::Weak<PlainSlot>>>,
    /// Runs composed lately (see [`Repo::compose`]).
    composed: Mutex<Vec<(BlobId, Arc<ComposedRun>)>>,
    /// Bytes of them kept (see [`COMPOSED_KEPT`]).
    composed_kept: std::sync::atomic::AtomicUsize,
    /// Runs being composed now, each by one thread (others wanting it wait for that one).
    composing: Mutex<IdMap<BlobId, Arc<ComposeSlot>>>,
    /// Delta run blobs read lately, authenticated (see [`Repo::read_run`]).
    run_blobs: Mutex<Vec<KeptRun>>,
    /// Whether the index was brought up to date with the files when the repository was
    /// opened (write mode).
    synced: bool,
}

/// A composed run, and where its members are in it.
struct ComposedRun {
    run: Arc<crate::delta::Composed>,
    members: IdMap<BlobId, (u32, u32)>,
}

impl ComposedRun {
    /// Bytes it holds of its own (its member table: an entry and a control byte a slot).
    fn held_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(BlobId, (u32, u32))>() + 1;
        self.run.held_bytes() + self.members.capacity() * slot
    }
}

/// Bytes of plain chunks a process keeps after reading them (a window's edges, which the
/// next window often needs again). 4 MiB, not 16: the delta backup of the corpus dump's
/// fifth revision then peaked 20–30 MB lower, in the same time (both with 4 MiB runs).
const PLAIN_KEPT: usize = 4 << 20;

/// Bytes of delta run blobs a process keeps after reading them (each run is read twice in a
/// row, for its header and then to compose it; 16 MiB was no faster).
const RUN_BLOBS_KEPT: usize = 4 << 20;

/// A delta run blob kept after reading: its id, where it was read (pack and offset), its
/// authenticated plaintext, and the name errors give for it.
type KeptRun = (BlobId, (PackId, u64), Arc<Vec<u8>>, String);

/// Drops the oldest entries of a cache kept newest last until its bytes (`size` of each)
/// are within `budget`, the newest kept whatever its size.
fn trim_oldest<T>(kept: &mut Vec<T>, budget: usize, size: impl Fn(&T) -> usize) {
    let mut total: usize = kept.iter().map(&size).sum();
    while total > budget && kept.len() > 1 {
        total -= size(&kept.remove(0));
    }
}

/// A run being composed by one thread: what it composed, once it has (`None` if it failed).
type ComposeSlot = std::sync::OnceLock<Option<Arc<ComposedRun>>>;

/// Bytes of composed runs a process keeps (see [`ComposedRun::held_bytes`]). A run over a
/// dense run holds a stretch for every few bytes: 64 of them, the count kept before, held
/// 50 MB while the corpus dump's fifth revision was restored. A backup keeps half (see
/// [`Repo::fewer_composed`]).
const COMPOSED_KEPT: usize = 16 << 20;

/// Stretches beyond which a run is decoded whole rather than composed (a chain of runs with
/// edits every few bytes would make lists larger than the bytes).
const MAX_SEGS: usize = 1 << 20;

/// A decoded delta run's bytes.
type RunBytes = Arc<Vec<u8>>;

/// Decoded delta runs: depth and bytes by run id.
type Decoded = IdMap<BlobId, (u8, RunBytes)>;

/// The plain chunks one read needs, each read once: all together on every core
/// ([`PlainReads::read_all`]), or, for one not read that way, by the first task that needs
/// it while the others wanting it wait (the read uses no other task, so the wait always
/// ends). Neighbouring windows and prefixes share the plain chunks at their edges, so those
/// read lately are kept in the repository and reused.
struct PlainReads<'r> {
    repo: &'r Repo,
    need: Vec<BlobId>,
    slots: IdMap<BlobId, Arc<PlainSlot>>,
}

/// A plain chunk of a [`PlainReads`]: its bytes once read (`None` if that failed).
type PlainSlot = std::sync::OnceLock<Option<Arc<Vec<u8>>>>;

impl<'r> PlainReads<'r> {
    /// The reads of `need`: a chunk kept from an earlier read is there already, and one
    /// that another read under way also needs shares that read's slot, so it is decoded
    /// once. A backup finishes two or more runs at once, and their prefixes share chunks:
    /// at corpus depth 4 a backup decoded 120 MB of chunks to rebuild an 80 MB parent.
    fn new(repo: &'r Repo, need: Vec<BlobId>) -> Self {
        let kept = repo.plain_kept.lock().expect("not poisoned");
        let mut reading = repo.plain_reading.lock().expect("not poisoned");
        // Reads that ended leave dead entries: cleared once they outnumber the live ones.
        if reading.len() > 4096.max(4 * need.len()) {
            reading.retain(|_, slot| slot.strong_count() > 0);
        }
        let slots = need
            .iter()
            .map(|c| {
                let slot = reading
                    .get(c)
                    .and_then(std::sync::Weak::upgrade)
                    .unwrap_or_else(|| {
                        let slot = Arc::new(PlainSlot::new());
                        if let Some((_, d)) = kept.iter().find(|(k, _)| k == c) {
                            let _ = slot.set(Some(d.clone()));
                        }
                        reading.insert(*c, Arc::downgrade(&slot));
                        slot
                    });
                (*c, slot)
            })
            .collect();
        drop((kept, reading));
        PlainReads { repo, need, slots }
    }

    /// Reads every chunk needed, on every core, before any is asked for: a task that found
    /// a chunk being read by another only waited, and left its core idle.
    fn read_all(self) -> Self {
        use rayon::prelude::*;
        self.need.par_iter().for_each(|c| {
            let _ = self.get(c);
        });
        self
    }

    /// Chunk `c`, read now or by another task.
    fn get(&self, c: &BlobId) -> Result<Arc<Vec<u8>>> {
        match self.slots.get(c) {
            Some(slot) => match slot.get_or_init(|| self.repo.plain_chunk(c).ok()) {
                Some(d) => Ok(d.clone()),
                // Errors are not kept: ask again for this reader's own copy.
                None => self.repo.plain_chunk(c),
            },
            None => self.repo.plain_chunk(c),
        }
    }

    /// [`PlainReads::get`], borrowed (no reference count is touched, where both cores copy
    /// stretches of the same chunks); `None` for a chunk not among the reads, or one whose
    /// read failed.
    fn borrowed(&self, c: &BlobId) -> Option<&[u8]> {
        self.slots
            .get(c)?
            .get_or_init(|| self.repo.plain_chunk(c).ok())
            .as_deref()
            .map(|v| v.as_slice())
    }

    /// Keeps the chunks read in the repository, up to [`PLAIN_KEPT`] bytes, the latest.
    fn keep(self) {
        let mut kept = self.repo.plain_kept.lock().expect("not poisoned");
        for c in &self.need {
            if let Some(Some(d)) = self.slots[c].get()
                && !kept.iter().any(|(k, _)| k == c)
            {
                kept.push((*c, d.clone()));
            }
        }
        trim_oldest(&mut kept, PLAIN_KEPT, |(_, d)| d.len());
    }
}

/// Where a chunk is stored.
enum Source {
    /// A data blob of its own.
    Blob(Location),
    /// Inside a delta run: the run, the offset and the length.
    Member(BlobId, u32, u32),
}

/// How many decoded delta runs a process keeps.
const RUN_CACHE: usize = 8;

/// Refuses a run deeper than `depth` (its reader's bases must be shallower than the reader).
fn check_depth(id: &BlobId, h: &crate::delta::RunHeader, depth: u8, what: &str) -> Result<()> {
    if h.depth > depth {
        return Err(Error::corrupt(
            what,
            format!(
                "delta run {} is {} deep where at most {depth} can be (a chain that loops?)",
                id.short(),
                h.depth
            ),
        ));
    }
    Ok(())
}

fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Creates a repository at `path` with one key file for `password`.
pub fn init(path: &Path, password: &[u8], kdf: KdfParams) -> Result<()> {
    init_with(path, password, Config::new(kdf))
}

/// [`init`] with given settings (chunk sizes, pack size, KDF); the id is taken from `config`.
pub fn init_with(path: &Path, password: &[u8], config: Config) -> Result<()> {
    config.chunker_tree.validate()?;
    config.chunker_stream.validate()?;
    keyfile::check_bounds(config.kdf).map_err(Error::Invalid)?;
    if !(1 << 20..=512 << 20).contains(&config.pack_size) {
        return Err(Error::Invalid(
            "the pack size must be from 1 to 512 MiB".into(),
        ));
    }
    let kdf = config.kdf;
    if path.exists() {
        let mut rd = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
        if rd.next().is_some() {
            return Err(Error::AlreadyExists(path.to_path_buf()));
        }
    }
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(path, e))?;
    let backend = LocalBackend::new(path);
    for d in ["keys", "packs", "snapshots", "locks"] {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path.join(d))
            .map_err(|e| Error::io(path.join(d), e))?;
    }
    let master = MasterKey::generate();
    let keys = Keys::derive(&master);
    let kf = keyfile::create(
        &master,
        &[],
        password,
        kdf,
        &lock::hostname(),
        &whoami(),
        crate::now_ns(),
    )?;
    backend.write(&format!("keys/{}", hex::encode(random_array::<16>())), &kf)?;
    backend.write("config", &config.seal(&keys))?;
    // An empty index, so read-only commands work before the first backup.
    Index::create(&path.join("index"))?;
    Ok(())
}

use std::os::unix::fs::DirBuilderExt;

impl Repo {
    /// Opens the repository at `path` with `password`.
    pub fn open(path: &Path, password: &[u8], mode: Mode) -> Result<Self> {
        finish_index_swap(path)?;
        Self::open_at(path, password, mode, &path.join("index"))
    }

    /// [`Repo::open`] with the index in `index_dir`.
    fn open_at(path: &Path, password: &[u8], mode: Mode, index_dir: &Path) -> Result<Self> {
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(path));
        Self::open_backend(backend, path, password, mode, index_dir)
    }

    /// Opens a repository stored in `backend`, with its index (a local cache) in
    /// `index_dir`; `path` names the repository in messages. For other backends and for
    /// tests that inject faults.
    pub fn open_backend(
        backend: Arc<dyn Backend>,
        path: &Path,
        password: &[u8],
        mode: Mode,
        index_dir: &Path,
    ) -> Result<Self> {
        if !backend.exists("config")? {
            return Err(Error::NoRepository(path.to_path_buf()));
        }
        let (unwrapped, key_name) = unlock(backend.as_ref(), password)?;
        let keys = Keys::derive_with(&unwrapped.master, &unwrapped.generations);
        let config = Config::open(
            &keys,
            &read_bounded(backend.as_ref(), "config", crate::config::MAX_CONFIG_FILE)?,
        )?;
        let index_dir = index_dir.to_path_buf();
        let index = match mode {
            Mode::Read => Some(Index::open(&index_dir)?),
            Mode::Write => {
                if !index_dir.join("CURRENT").exists() {
                    Index::create(&index_dir)?;
                }
                Some(Index::open(&index_dir)?)
            }
            Mode::Keys => None,
        };
        let repo = Self {
            backend,
            root: path.to_path_buf(),
            keys,
            master: unwrapped.master,
            generations: unwrapped.generations,
            config,
            index,
            key_name,
            pack_keys: Mutex::new(HashMap::new()),
            runs: Mutex::new(Vec::new()),
            composed: Mutex::new(Vec::new()),
            composed_kept: COMPOSED_KEPT.into(),
            composing: Mutex::new(IdMap::default()),
            run_blobs: Mutex::new(Vec::new()),
            synced: mode == Mode::Write,
            plain_kept: Mutex::new(Vec::new()),
            plain_reading: Mutex::new(IdMap::default()),
            base_locs: Mutex::new(IdMap::default()),
        };
        if mode == Mode::Write {
            repo.sync_index()?;
        }
        Ok(repo)
    }

    /// The derived keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The index. Only a repository opened with [`Mode::Keys`] has none, and nothing that
    /// reads data is reachable from such a handle.
    pub fn index(&self) -> &Index {
        self.index
            .as_ref()
            .expect("repository opened without an index")
    }
    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The key file the password opened.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// Takes a repository lock.
    ///
    /// The index view is refreshed once the lock is held: a prune waits only for holders
    /// whose lock is older than the moment it hid packs, so a holder must not keep a view
    /// of the index older than its lock.
    pub fn lock(&self, exclusive: bool, command: &str) -> Result<Lock> {
        let l = lock::acquire(&self.backend, &self.keys, exclusive, command)?;
        if let Some(ix) = &self.index {
            ix.refresh()?;
        }
        Ok(l)
    }

    /// Takes a lock as described by `req` (scoped, waiting).
    pub fn lock_with(&self, req: &lock::Request) -> Result<Lock> {
        let l = lock::acquire_with(&self.backend, &self.keys, req)?;
        if let Some(ix) = &self.index {
            ix.refresh()?;
        }
        Ok(l)
    }

    /// The chunker for files in trees.
    pub fn tree_chunker(&self) -> Result<Chunker> {
        Chunker::new(self.keys.gear_table(), self.config.chunker_tree)
    }
    /// The chunker for streams.
    pub fn stream_chunker(&self) -> Result<Chunker> {
        Chunker::new(self.keys.gear_table(), self.config.chunker_stream)
    }

    /// Reads and authenticates a pack's table.
    pub fn pack_toc(&self, id: &PackId) -> Result<Vec<pack::Entry>> {
        let name = pack_name(id);
        let what = format!("pack {}", id.short());
        let size = self.backend.size(&name)?;
        if size < (HEADER_LEN + 4) as u64 {
            return Err(Error::corrupt(&what, format!("truncated ({size} bytes)")));
        }
        let trailer: [u8; 4] = self
            .backend
            .read_at(&name, size - 4, 4)?
            .try_into()
            .expect("4");
        let (off, len) = pack::toc_range(size, trailer, &what)?;
        let head = self.backend.read_at(&name, 0, HEADER_LEN as u64)?;
        let toc = self.backend.read_at(&name, off, len as u64)?;
        pack::open_toc(&self.keys, &head, &toc, off, &what)
    }

    fn pack_key(&self, id: &PackId) -> Result<ObjectKey> {
        if let Some(k) = self.pack_keys.lock().expect("not poisoned").get(id) {
            return Ok(k.clone());
        }
        let head = self.backend.read_at(&pack_name(id), 0, HEADER_LEN as u64)?;
        let k = pack::pack_key(&self.keys, &head, &format!("pack {}", id.short()))?;
        self.pack_keys
            .lock()
            .expect("not poisoned")
            .insert(*id, k.clone());
        Ok(k)
    }

    /// Where a blob is, or an error naming it when the index does not know it.
    pub fn locate(&self, id: &BlobId) -> Result<Location> {
        self.index().get(id)?.ok_or_else(|| {
            Error::corrupt(
                format!("blob {}", id.short()),
                "not in the index (its pack is missing; try `cairn index rebuild`)",
            )
        })
    }

    /// Indexes a pack from its table, and the chunks inside each delta run in it (read from
    /// the run's header).
    pub fn index_pack(&self, id: &PackId, size: u64, entries: &[pack::Entry]) -> Result<()> {
        self.index().add_pack(id, size, entries)?;
        for e in entries.iter().filter(|e| e.kind == BlobKind::DeltaRun) {
            let h = self.run_header(&e.id)?;
            self.index().add_members(&e.id, &h.members)?;
        }
        Ok(())
    }

    /// Reads a chunk of file data: a data blob of its own, or its slice of the delta run that
    /// holds it; either way re-hashed against its id.
    pub fn read_chunk(&self, id: &BlobId) -> Result<Vec<u8>> {
        Ok(self.chunk(id)?.to_vec())
    }

    /// [`Repo::read_chunk`] without copying a chunk out of its run.
    pub fn chunk(&self, id: &BlobId) -> Result<Bytes> {
        self.chunks(std::slice::from_ref(id)).pop().expect("one")
    }

    /// [`Repo::chunk`] of many chunks, read on every core: a chunk in a run is copied
    /// together from what its run composes to (see [`Repo::compose`]), and every plain chunk
    /// needed, for itself or as a base, is read once. Every chunk handed out is re-hashed; a
    /// chunk read only as a base is not: wrong bases give wrong bytes, which the chunks made
    /// of them then fail, so restoring through a chain of N runs hashes its bytes once, not
    /// N + 1 times.
    pub fn chunks(&self, ids: &[BlobId]) -> Vec<Result<Bytes>> {
        use rayon::prelude::*;
        let depth = u8::MAX;
        let sources: Vec<Result<Source>> = ids.iter().map(|id| self.source(id)).collect();
        // A chunk in a run is put together from the plain chunks and literals its run
        // composes to: those chunks are read on every core, each once. Runs not prepared
        // yet are composed on every core first.
        let mut runs: Vec<BlobId> = Vec::new();
        for s in &sources {
            if let Ok(Source::Member(run, _, _)) = s
                && !runs.contains(run)
            {
                runs.push(*run);
            }
        }
        self.compose_all(&runs);
        let plans: Vec<Option<Result<Arc<ComposedRun>>>> = sources
            .iter()
            .map(|s| match s {
                Ok(Source::Member(run, off, len)) => Some(self.plan(run, *off, *len, depth)),
                _ => None,
            })
            .collect();
        // Beside runs, chunks stored on their own are read the same way: a plain chunk is
        // often both wanted itself and a base of a neighbouring run.
        let runs = plans.iter().any(|p| p.is_some());
        let need = Self::plain_needs(
            ids.iter().zip(&sources).zip(&plans).map(|((id, s), p)| {
                (
                    id,
                    s.as_ref().ok(),
                    p.as_ref().and_then(|p| p.as_ref().ok()),
                )
            }),
            runs,
        );
        let reads = PlainReads::new(self, need).read_all();
        let out: Vec<Result<Bytes>> = ids
            .par_iter()
            .zip(sources)
            .zip(plans)
            .map(|((id, source), plan)| match source? {
                Source::Blob(loc) => {
                    let data = reads.get(id)?;
                    if self.keys.chunk_id(&data) != *id {
                        return Err(Error::corrupt(
                            format!("pack {}", loc.pack.short()),
                            format!("blob {} does not hash to its id", id.short()),
                        ));
                    }
                    Ok(Bytes::whole(data))
                }
                Source::Member(run, off, len) => {
                    let plan = plan.expect("planned")?;
                    let mut out = Vec::with_capacity(len as usize);
                    self.copy_composed(&plan, &run, off as u64, len as u64, &reads, |b| {
                        out.extend_from_slice(b)
                    })?;
                    self.member(id, &run, Arc::new(out), 0, len, depth, true)
                }
            })
            .collect();
        reads.keep();
        out
    }

    /// The prefix a new delta run is compressed against: bytes `plan` names of `bases`
    /// (see [`crate::delta::prefix_plan`]), in one buffer. A base stored on its own is
    /// copied from its decoded chunk, a base inside a run straight from the stretches its run
    /// composes to, each place filled on any core. Bases are not re-hashed: wrong bytes would
    /// only make the new run larger, since decoding reads the same bytes and checks the
    /// result.
    pub fn base_prefix(
        &self,
        bases: &[(BlobId, u32)],
        plan: &[(usize, std::ops::Range<usize>)],
    ) -> Result<Vec<u8>> {
        use rayon::prelude::*;
        let ids: Vec<BlobId> = plan.iter().map(|(i, _)| bases[*i].0).collect();
        let sources = ids
            .iter()
            .map(|id| self.source(id))
            .collect::<Result<Vec<_>>>()?;
        let composed = sources
            .iter()
            .map(|s| match s {
                Source::Member(run, off, len) => self.plan(run, *off, *len, u8::MAX).map(Some),
                Source::Blob(_) => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let need = Self::plain_needs(
            ids.iter()
                .zip(&sources)
                .zip(&composed)
                .map(|((id, s), c)| (id, Some(s), c.as_ref())),
            true,
        );
        let reads = PlainReads::new(self, need).read_all();
        let mut prefix = vec![0u8; plan.iter().map(|(_, r)| r.len()).sum()];
        let places = crate::delta::places(&mut prefix, plan);
        let filled = plan
            .par_iter()
            .zip(places)
            .zip(ids.par_iter().zip(&sources).zip(&composed))
            .try_for_each(|(((i, range), place), ((id, source), composed))| {
                let base_len = bases[*i].1;
                let short = || {
                    Error::corrupt(
                        "parent",
                        format!("base chunk {} is not {base_len} bytes", id.short()),
                    )
                };
                match (source, composed) {
                    (Source::Member(run, off, len), Some(c)) => {
                        if *len != base_len {
                            return Err(short());
                        }
                        let mut at = 0;
                        let from = *off as u64 + range.start as u64;
                        self.copy_composed(c, run, from, range.len() as u64, &reads, |b| {
                            place[at..at + b.len()].copy_from_slice(b);
                            at += b.len();
                        })
                    }
                    _ => {
                        let data = reads.get(id)?;
                        if data.len() != base_len as usize {
                            return Err(short());
                        }
                        place.copy_from_slice(&data[range.clone()]);
                        Ok(())
                    }
                }
            });
        reads.keep();
        filled?;
        Ok(prefix)
    }

    /// Where a chunk is: a blob of its own, or a stretch of a run.
    fn source(&self, id: &BlobId) -> Result<Source> {
        if let Some(loc) = self.index().get(id)?
            && loc.kind == BlobKind::Data
        {
            return Ok(Source::Blob(loc));
        }
        match self.index().member(id)? {
            Some((run, off, len)) => Ok(Source::Member(run, off, len)),
            None => Err(Error::corrupt(
                format!("chunk {}", id.short()),
                "not in the index (its pack is missing; try `cairn index rebuild`)",
            )),
        }
    }

    /// The plain chunks a read needs, each once: those the runs of its chunks (each given
    /// with its source and composed run, when known) compose to, and, with `blobs`, its chunks
    /// stored on their own.
    fn plain_needs<'a>(
        chunks: impl Iterator<Item = (&'a BlobId, Option<&'a Source>, Option<&'a Arc<ComposedRun>>)>,
        blobs: bool,
    ) -> Vec<BlobId> {
        let mut need: Vec<BlobId> = Vec::new();
        let mut seen = IdSet::default();
        let mut members = Vec::new();
        for (id, source, composed) in chunks {
            match (source, composed) {
                (Some(Source::Blob(_)), _) if blobs && seen.insert(*id) => need.push(*id),
                (Some(Source::Member(_, off, len)), Some(c)) => members.push((*off, *len, c)),
                _ => {}
            }
        }
        for (off, len, c) in members {
            for (src, _, _) in c.run.range(off as u64, len as u64) {
                if let crate::delta::Src::Chunk(c) = src
                    && seen.insert(*c)
                {
                    need.push(*c);
                }
            }
        }
        need
    }

    /// Bytes `from .. from + len` of `run` (composed as `c`), handed to `put` stretch by
    /// stretch, plain chunks taken from `reads`.
    fn copy_composed(
        &self,
        c: &ComposedRun,
        run: &BlobId,
        from: u64,
        len: u64,
        reads: &PlainReads,
        mut put: impl FnMut(&[u8]),
    ) -> Result<()> {
        // Stretches of one chunk mostly alternate with literals: the chunk last read is
        // held, not looked up again for each. Each stretch is copied a few stretches after
        // its bytes are asked for: fragment copies read from anywhere in the 8-10 MB of
        // chunks a window decodes, and a cache miss per stretch was most of their cost.
        const AHEAD: usize = 8;
        let short = || {
            Error::corrupt(
                format!("delta run {}", run.short()),
                "a base is shorter than the run says",
            )
        };
        let mut ahead: std::collections::VecDeque<&[u8]> =
            std::collections::VecDeque::with_capacity(AHEAD + 1);
        let mut held: Option<(&BlobId, &[u8])> = None;
        for (src, at, n) in c.run.range(from, len) {
            let buf: &[u8] = match src {
                crate::delta::Src::Bytes(b) => b,
                crate::delta::Src::Chunk(c) => match held {
                    Some((h, b)) if h == c => b,
                    _ => match reads.borrowed(c) {
                        Some(b) => {
                            held = Some((c, b));
                            b
                        }
                        None => {
                            // Not among the reads, or its read failed: read now (for this
                            // reader's own error) and copied after the stretches before it.
                            let own = reads.get(c)?;
                            while let Some(p) = ahead.pop_front() {
                                put(p);
                            }
                            put(own.get(at..at + n as usize).ok_or_else(short)?);
                            continue;
                        }
                    },
                },
            };
            let bytes = buf.get(at..at + n as usize).ok_or_else(short)?;
            crate::delta::prefetch_bytes(bytes);
            ahead.push_back(bytes);
            if ahead.len() > AHEAD {
                put(ahead.pop_front().expect("more than AHEAD"));
            }
        }
        while let Some(p) = ahead.pop_front() {
            put(p);
        }
        Ok(())
    }

    /// Gets the runs that chunks `ids` lie in ready (composed) for a later
    /// [`Repo::chunks`], which then only reads plain chunks: a restore prepares the next
    /// window of a file while it reads the current one. Errors are left for that call.
    pub fn prepare(&self, ids: &[BlobId]) {
        // Without delta runs there is nothing to prepare, and no index lookup is spent.
        if self.config.delta.is_none() {
            return;
        }
        let mut runs: Vec<BlobId> = Vec::new();
        for id in ids {
            // One lookup: only whether the chunk is in a run matters here.
            if let Ok(Some((run, _, _))) = self.index().member(id)
                && !runs.contains(&run)
            {
                runs.push(run);
            }
        }
        self.compose_all(&runs);
    }

    /// Composes `runs` on every core, the last first: a window's first run is mostly the
    /// one the window before ends in, which the reader of that window is composing already.
    /// Errors are left for the callers that need the runs.
    ///
    /// On threads of its own, not rayon's: a composition may wait for a run another thread
    /// composes, and one that decodes a run whole hands work to rayon meanwhile. A rayon
    /// worker waiting there could leave no worker for that work, or take up, while it waits,
    /// a job that waits for the run it is composing itself.
    fn compose_all(&self, runs: &[BlobId]) {
        // Most reads (every file of a tree) have no runs: nothing to lock or count.
        if runs.is_empty() {
            return;
        }
        // Those composed already are left alone (and keep their place in the cache).
        let runs: Vec<BlobId> = {
            let cache = self.composed.lock().expect("not poisoned");
            runs.iter()
                .filter(|r| !cache.iter().any(|(c, _)| c == *r))
                .copied()
                .collect()
        };
        // rayon's count, read once: `available_parallelism` reads three cgroup files a call.
        let threads = rayon::current_num_threads().min(runs.len());
        if threads < 2 {
            for run in runs.iter().rev() {
                let _ = self.compose(run, u8::MAX);
            }
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(run) = runs.len().checked_sub(i + 1).map(|k| &runs[k]) else {
                            break;
                        };
                        let _ = self.compose(run, u8::MAX);
                    }
                });
            }
        });
    }

    /// The composed run that chunk `off .. off + len` of `run` is read from (its stretches
    /// of plain chunks and literals), checked to hold it.
    fn plan(&self, run: &BlobId, off: u32, len: u32, depth: u8) -> Result<Arc<ComposedRun>> {
        let c = self.compose(run, depth)?;
        if off as u64 + len as u64 > c.run.len() {
            return Err(Error::corrupt(
                format!("delta run {}", run.short()),
                "a chunk lies outside it",
            ));
        }
        Ok(c)
    }

    /// A chunk stored on its own, decompressed but not re-hashed (it is a base: what is made
    /// of it is hashed).
    fn plain_chunk(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        let known = self.base_locs.lock().expect("not poisoned").remove(id);
        if let Some(loc) = known
            && let Ok(d) = self.plain_chunk_at(id, &loc)
        {
            return Ok(d);
        }
        // Not remembered, or moved since (a repair or prune in this process): ask the index.
        let loc = self.locate(id)?;
        self.plain_chunk_at(id, &loc)
    }

    /// [`Repo::plain_chunk`] at a known location.
    fn plain_chunk_at(&self, id: &BlobId, loc: &Location) -> Result<Arc<Vec<u8>>> {
        let loc = *loc;
        if loc.kind != BlobKind::Data {
            return Err(Error::corrupt(
                format!("blob {}", id.short()),
                "a base that is not a data chunk",
            ));
        }
        let (enc, what) = self.read_encoded_at(id, &loc)?;
        Ok(Arc::new(blob::decode(&enc, id, loc.raw_len, &what)?))
    }

    /// A run (at most `depth` deep) composed down its chain: its bytes as stretches of
    /// plain chunks and literals (of its own edits and of the runs below). Nothing but
    /// headers and edit lists is read. A version 1 run, or one that would compose to too
    /// many stretches, is decoded whole instead.
    fn compose(&self, run: &BlobId, depth: u8) -> Result<Arc<ComposedRun>> {
        if let Some(c) = self.composed_cache(run) {
            return Ok(c);
        }
        // A restore composes the runs of its next window while it reads the current one, and
        // both want the same runs below: one thread composes each run, the others wait for
        // it. A thread waits only for a run no deeper than it allows, and a composition only
        // asks for runs shallower than its own, so no two threads ever wait for each other
        // (a hostile chain fails the depth check instead).
        let (slot, waits) = {
            let mut composing = self.composing.lock().expect("not poisoned");
            let waits = composing.contains_key(run);
            (composing.entry(*run).or_default().clone(), waits)
        };
        if waits {
            let (enc, what) = self.read_run(run)?;
            check_depth(run, &crate::delta::parse(&enc, &what)?.0, depth, &what)?;
        }
        let done = slot
            .get_or_init(|| self.compose_now(run, depth).ok())
            .clone();
        {
            // Only this slot: a later one for the same run may be in place already.
            let mut composing = self.composing.lock().expect("not poisoned");
            if composing.get(run).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                composing.remove(run);
            }
        }
        match done {
            Some(c) => Ok(c),
            // Errors are not kept: compose again for this caller's own.
            None => self.compose_now(run, depth),
        }
    }

    /// [`Repo::compose`], done here and now.
    fn compose_now(&self, run: &BlobId, depth: u8) -> Result<Arc<ComposedRun>> {
        use crate::delta::Composed;
        let (enc, what) = self.read_run(run)?;
        let (h, body) = crate::delta::parse(&enc, &what)?;
        check_depth(run, &h, depth, &what)?;
        let whole =
            |this: &Self| -> Result<Composed> { Ok(Composed::whole(this.run_below(run, depth)?)) };
        let c = match crate::delta::edits(body, &h, &what)? {
            None => whole(self)?,
            Some(edits) => {
                use crate::delta::{Part, Prefix};
                let mut prefix = Prefix::default();
                // Consecutive bases are mostly consecutive members of one run below: its
                // member list answers before the index is asked.
                let mut below_runs: Vec<(BlobId, Arc<ComposedRun>)> = Vec::new();
                for (i, range) in crate::delta::prefix_plan(&h.bases, h.skip, h.prefix_len) {
                    let (base, base_len) = h.bases[i];
                    let known = below_runs.iter().rev().find_map(|(r, c)| {
                        c.members
                            .get(&base)
                            .map(|(off, len)| Source::Member(*r, *off, *len))
                    });
                    let source = match known {
                        Some(s) => s,
                        None => self.source(&base)?,
                    };
                    let short = || {
                        Error::corrupt(
                            &what,
                            format!("base chunk {} is not {base_len} bytes", base.short()),
                        )
                    };
                    match source {
                        Source::Blob(loc) => {
                            if loc.raw_len != base_len {
                                return Err(short());
                            }
                            // Remembered for reading the chunk: one index lookup, not two.
                            let mut locs = self.base_locs.lock().expect("not poisoned");
                            if locs.len() >= 1 << 16 {
                                locs.clear();
                            }
                            locs.insert(base, loc);
                            prefix.push(Part::Chunk(base, range.start as u32, range.len() as u32));
                        }
                        Source::Member(below, off, len) => {
                            let lower = self.compose(&below, h.depth - 1)?;
                            if len != base_len || off as u64 + len as u64 > lower.run.len() {
                                return Err(short());
                            }
                            prefix.push(Part::Lower(
                                lower.run.clone(),
                                off as u64 + range.start as u64,
                                range.len() as u64,
                            ));
                            if !below_runs.iter().any(|(r, _)| *r == below) {
                                below_runs.push((below, lower));
                            }
                        }
                    }
                }
                let c = Composed::apply(edits, &prefix);
                if c.stretches() > MAX_SEGS {
                    whole(self)?
                } else {
                    c
                }
            }
        };
        let mut members = IdMap::with_capacity_and_hasher(h.members.len(), Default::default());
        let mut at = 0u32;
        for (m, len) in &h.members {
            members.entry(*m).or_insert((at, *len));
            at += len;
        }
        let c = Arc::new(ComposedRun {
            run: Arc::new(c),
            members,
        });
        let mut cache = self.composed.lock().expect("not poisoned");
        cache.push((*run, c.clone()));
        let budget = self
            .composed_kept
            .load(std::sync::atomic::Ordering::Relaxed);
        trim_oldest(&mut cache, budget, |(_, c)| c.held_bytes());
        Ok(c)
    }

    /// Halves the bytes of composed runs kept, until the guard is dropped. A backup composes the parent's
    /// runs for the prefixes of its new ones while two of those are finished at once, each
    /// holding its run, prefix and anchor table: with 16 MiB of composed runs the delta
    /// backup of the corpus dump's fifth revision peaked at 95–102 MB, with 8 MiB at
    /// 88–100, in the same time. A restore holds none of those, and with 8 MiB composed
    /// runs again (a sixth slower).
    pub fn fewer_composed(&self) -> impl Drop + '_ {
        struct Fewer<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Fewer<'_> {
            fn drop(&mut self) {
                self.0
                    .store(COMPOSED_KEPT, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.composed_kept
            .store(COMPOSED_KEPT / 2, std::sync::atomic::Ordering::Relaxed);
        Fewer(&self.composed_kept)
    }

    /// A run composed lately, moved to the back of the cache.
    fn composed_cache(&self, id: &BlobId) -> Option<Arc<ComposedRun>> {
        let mut cache = self.composed.lock().expect("not poisoned");
        let i = cache.iter().position(|(r, _)| r == id)?;
        let hit = cache.remove(i);
        cache.push(hit);
        cache.last().map(|(_, c)| c.clone())
    }

    /// The stretch of a decoded run that is chunk `id`, re-hashed when `verify`.
    #[allow(clippy::too_many_arguments)]
    fn member(
        &self,
        id: &BlobId,
        run: &BlobId,
        buf: Arc<Vec<u8>>,
        off: u32,
        len: u32,
        depth: u8,
        verify: bool,
    ) -> Result<Bytes> {
        let what = format!("delta run {}", run.short());
        let slice =
            Bytes::part(buf, off as usize..off as usize + len as usize).ok_or_else(|| {
                Error::corrupt(&what, format!("chunk {} lies outside it", id.short()))
            })?;
        if verify && self.keys.chunk_id(&slice) != *id {
            // Decoding the run again, checked level by level, names the damage precisely.
            let (enc, what) = self.read_encoded(run)?;
            self.decode_run(run, &enc, depth, &what)?;
            return Err(Error::corrupt(
                &what,
                format!("chunk {} does not hash to its id", id.short()),
            ));
        }
        Ok(slice)
    }

    /// The bytes of a delta run at most `depth` deep, decoded (and kept for the next reads)
    /// but not re-hashed: see [`Repo::chunks`].
    fn run_below(&self, id: &BlobId, depth: u8) -> Result<Arc<Vec<u8>>> {
        let mut d = self.decode_runs(std::slice::from_ref(id), depth)?;
        Ok(d.remove(id).expect("decoded").1)
    }

    /// Decodes `runs` (each at most `depth` deep) on every core, none of them twice: first,
    /// all together, the runs their bases lie in (recursively, one level of the chains at a
    /// time), then these against them. Returns each run's depth and bytes.
    fn decode_runs(&self, runs: &[BlobId], depth: u8) -> Result<Decoded> {
        use rayon::prelude::*;
        let mut out = Decoded::default();
        let mut todo = Vec::new();
        for r in runs {
            match self.cached_run(r) {
                Some(d) => {
                    out.insert(*r, d);
                }
                None if !todo.contains(r) => todo.push(*r),
                None => {}
            }
        }
        if todo.is_empty() {
            return Ok(out);
        }
        let read = todo
            .par_iter()
            .map(|r| self.read_run(r))
            .collect::<Result<Vec<_>>>()?;
        let mut parsed = Vec::with_capacity(read.len());
        let (mut lower, mut lower_depth) = (Vec::new(), 0);
        for (r, (enc, what)) in todo.iter().zip(&read) {
            let (h, frame) = crate::delta::parse(enc, what)?;
            check_depth(r, &h, depth, what)?;
            for run in self.base_runs(&h)? {
                if !lower.contains(&run) {
                    lower.push(run);
                }
            }
            lower_depth = lower_depth.max(h.depth - 1);
            parsed.push((r, h, frame, what));
        }
        let below = match lower.is_empty() {
            true => Decoded::default(),
            false => self.decode_runs(&lower, lower_depth)?,
        };
        let decoded = parsed
            .par_iter()
            .map(|(r, h, frame, what)| {
                let data = self.decode_against_bases(h, *frame, &below, false, what)?;
                Ok((**r, h.depth, Arc::new(data)))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cache = self.runs.lock().expect("not poisoned");
        for (r, d, data) in decoded {
            if cache.len() >= RUN_CACHE {
                cache.remove(0);
            }
            cache.push((r, d, data.clone()));
            out.insert(r, (d, data));
        }
        Ok(out)
    }

    /// The runs that a run's bases (those its prefix overlaps) lie in.
    fn base_runs(&self, h: &crate::delta::RunHeader) -> Result<Vec<BlobId>> {
        let mut runs = Vec::new();
        for (i, _) in crate::delta::prefix_plan(&h.bases, h.skip, h.prefix_len) {
            if let Some((run, _, _)) = self.index().member(&h.bases[i].0)?
                && !runs.contains(&run)
            {
                runs.push(run);
            }
        }
        Ok(runs)
    }

    /// A run decoded lately (its depth and bytes), moved to the back of the cache.
    fn cached_run(&self, id: &BlobId) -> Option<(u8, Arc<Vec<u8>>)> {
        let mut cache = self.runs.lock().expect("not poisoned");
        let i = cache.iter().position(|(r, _, _)| r == id)?;
        let hit = cache.remove(i);
        cache.push(hit);
        cache.last().map(|(_, d, data)| (*d, data.clone()))
    }

    /// A blob's plaintext, authenticated but not decompressed, and a name for errors.
    fn read_encoded(&self, id: &BlobId) -> Result<(Vec<u8>, String)> {
        self.read_encoded_at(id, &self.locate(id)?)
    }

    /// A delta run's plaintext, authenticated, as [`Repo::read_encoded`] gives it. A backup
    /// reads each run of the parent for its header and edit count, then again to compose
    /// it; a restore reads a run to check its depth while another thread composes it. The
    /// blob is sealed whole (a header alone cannot be authenticated), so the runs read
    /// lately are kept, up to [`RUN_BLOBS_KEPT`] bytes, and each is read and opened once.
    fn read_run(&self, id: &BlobId) -> Result<(Arc<Vec<u8>>, String)> {
        // Kept by where it was read: one run id may be stored twice, encoded against
        // different bases (two backups that made the same run), and what is asked for is
        // always the copy the index names now.
        let loc = self.locate(id)?;
        let at = (loc.pack, loc.offset);
        {
            let mut kept = self.run_blobs.lock().expect("not poisoned");
            if let Some(i) = kept.iter().position(|(r, w, _, _)| r == id && *w == at) {
                let hit = kept.remove(i);
                kept.push(hit.clone());
                return Ok((hit.2, hit.3));
            }
        }
        let (enc, what) = self.read_encoded_at(id, &loc)?;
        let enc = Arc::new(enc);
        let mut kept = self.run_blobs.lock().expect("not poisoned");
        if !kept.iter().any(|(r, w, _, _)| r == id && *w == at) {
            kept.push((*id, at, enc.clone(), what.clone()));
        }
        trim_oldest(&mut kept, RUN_BLOBS_KEPT, |(_, _, b, _)| b.len());
        Ok((enc, what))
    }

    /// [`Repo::read_encoded`] of a blob already located.
    fn read_encoded_at(&self, id: &BlobId, loc: &Location) -> Result<(Vec<u8>, String)> {
        let what = format!("pack {}", loc.pack.short());
        let sealed = self
            .backend
            .read_at(&pack_name(&loc.pack), loc.offset, loc.stored_len as u64)
            .map_err(|e| match e {
                Error::NotFound(_) => Error::corrupt(&what, "pack file is missing"),
                e => e,
            })?;
        let key = self.pack_key(&loc.pack)?;
        let enc = blob::open_encoded(&key, loc.slot, id, loc.kind, loc.raw_len, &sealed, &what)?;
        Ok((enc, what))
    }

    /// The header of a delta run (its members and bases).
    pub fn run_header(&self, id: &BlobId) -> Result<crate::delta::RunHeader> {
        let (enc, what) = self.read_run(id)?;
        Ok(crate::delta::parse(&enc, &what)?.0)
    }

    /// A run's depth, and how many runs a read of it goes through, itself included: 1 + the
    /// most of any run holding one of its bases. The second is at most the first, which
    /// counts revisions: a run over a dense one skips a level (see `archiver.rs`). `memo`
    /// keeps the answers; each run's header is read once.
    pub fn run_depth_levels(
        &self,
        id: &BlobId,
        memo: &mut IdMap<BlobId, (u8, u8)>,
    ) -> Result<(u8, u8)> {
        self.depth_levels_within(id, u8::MAX, memo)
    }

    /// [`Repo::run_depth_levels`] of a run at most `depth` deep (bases lie in shallower
    /// runs, so this ends: a hostile loop fails the check).
    fn depth_levels_within(
        &self,
        id: &BlobId,
        depth: u8,
        memo: &mut IdMap<BlobId, (u8, u8)>,
    ) -> Result<(u8, u8)> {
        if let Some(&(d, levels)) = memo.get(id) {
            if d > depth {
                return Err(Error::corrupt(
                    format!("delta run {}", id.short()),
                    format!("{d} deep where at most {depth} can be (a chain that loops?)"),
                ));
            }
            return Ok((d, levels));
        }
        let (enc, what) = self.read_run(id)?;
        let h = crate::delta::parse(&enc, &what)?.0;
        check_depth(id, &h, depth, &what)?;
        let mut below = 0u8;
        for run in self.base_runs(&h)? {
            below = below.max(self.depth_levels_within(&run, h.depth - 1, memo)?.1);
        }
        memo.insert(*id, (h.depth, below + 1));
        Ok((h.depth, below + 1))
    }

    /// [`Repo::run_header`], and how many edits the run holds (`None` for a version 1 run).
    pub fn run_header_edits(&self, id: &BlobId) -> Result<(crate::delta::RunHeader, Option<u64>)> {
        let (enc, what) = self.read_run(id)?;
        let (h, body) = crate::delta::parse(&enc, &what)?;
        Ok((h, crate::delta::edit_count(body)))
    }

    /// Decodes a delta run from its plaintext: its bases first (each shallower than `depth`
    /// allows), then the run against them; checks it hashes to `id`.
    pub fn decode_run(
        &self,
        id: &BlobId,
        enc: &[u8],
        depth: u8,
        what: &str,
    ) -> Result<(crate::delta::RunHeader, Vec<u8>)> {
        let (h, frame) = crate::delta::parse(enc, what)?;
        check_depth(id, &h, depth, what)?;
        let data = self.decode_parsed(id, &h, frame, what)?;
        Ok((h, data))
    }

    /// Decodes a parsed run against its bases and checks it hashes to `id`. When it does not,
    /// the bases are read again and re-hashed, so the error names a damaged base (a chunk of
    /// a run that was decoded wrong) rather than this run.
    fn decode_parsed(
        &self,
        id: &BlobId,
        h: &crate::delta::RunHeader,
        frame: crate::delta::Body,
        what: &str,
    ) -> Result<Vec<u8>> {
        let below = self.decode_runs(&self.base_runs(h)?, h.depth - 1)?;
        let data = self.decode_against_bases(h, frame, &below, false, what)?;
        if self.keys.run_id(&data) != *id {
            self.decode_against_bases(h, frame, &below, true, what)?;
            return Err(Error::corrupt(
                what,
                format!("delta run {} does not hash to its id", id.short()),
            ));
        }
        Ok(data)
    }

    /// Decodes a parsed run against its bases (re-hashing each base when `verify`), without
    /// checking the result. Bases inside runs are taken from `below` when they are there.
    fn decode_against_bases(
        &self,
        h: &crate::delta::RunHeader,
        frame: crate::delta::Body,
        below: &Decoded,
        verify: bool,
        what: &str,
    ) -> Result<Vec<u8>> {
        use rayon::prelude::*;
        // The bases are read on every core: a run of 8 MiB has dozens.
        let plan = crate::delta::prefix_plan(&h.bases, h.skip, h.prefix_len);
        let ids: Vec<BlobId> = plan.iter().map(|(i, _)| h.bases[*i].0).collect();
        let sources = ids
            .iter()
            .map(|id| self.source(id))
            .collect::<Result<Vec<Source>>>()?;
        if let Some(locs) = sources
            .iter()
            .map(|s| match s {
                Source::Blob(loc) => Some(*loc),
                _ => None,
            })
            .collect::<Option<Vec<Location>>>()
        {
            let prefix = self.prefix_of_blobs(h, &plan, &ids, &locs, verify, what)?;
            return crate::delta::decode(frame, h, &[prefix.into()], what);
        }
        let read = ids
            .par_iter()
            .zip(sources)
            .map(|(id, source)| match source {
                Source::Blob(loc) => {
                    let (enc, what) = self.read_encoded_at(id, &loc)?;
                    Ok(if verify {
                        self.decode_encoded(id, loc.kind, loc.raw_len, &enc, &what)?
                    } else {
                        blob::decode(&enc, id, loc.raw_len, &what)?
                    }
                    .into())
                }
                Source::Member(run, off, len) => {
                    let buf = match below.get(&run) {
                        Some((d, _)) if *d >= h.depth => {
                            return Err(Error::corrupt(
                                what,
                                format!(
                                    "base {} lies in a run {d} deep, this one is {} deep \
                                     (a chain that loops?)",
                                    id.short(),
                                    h.depth
                                ),
                            ));
                        }
                        Some((_, b)) => b.clone(),
                        None => self.run_below(&run, h.depth - 1)?,
                    };
                    self.member(id, &run, buf, off, len, h.depth - 1, verify)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let prefix = crate::delta::join_prefix(&h.bases, &plan, read, what)?;
        crate::delta::decode(frame, h, &prefix, what)
    }

    /// A prefix made only of data blobs (a run against a version stored as plain chunks):
    /// each blob is decompressed, in parallel, straight into its place in the prefix.
    fn prefix_of_blobs(
        &self,
        h: &crate::delta::RunHeader,
        plan: &[(usize, std::ops::Range<usize>)],
        ids: &[BlobId],
        locs: &[Location],
        verify: bool,
        what: &str,
    ) -> Result<Vec<u8>> {
        use rayon::prelude::*;
        let mut prefix = vec![0u8; h.prefix_len as usize];
        let places = crate::delta::places(&mut prefix, plan);
        plan.par_iter()
            .zip(places)
            .zip(ids.par_iter().zip(locs))
            .try_for_each(|(((i, range), place), (id, loc))| {
                let base_len = h.bases[*i].1;
                if loc.raw_len != base_len {
                    return Err(Error::corrupt(
                        what,
                        format!("base chunk {} is not {base_len} bytes", id.short()),
                    ));
                }
                let (enc, what) = self.read_encoded_at(id, loc)?;
                if range.len() == base_len as usize {
                    blob::decode_into(&enc, id, place, &what)?;
                    if verify && self.keys.chunk_id(place) != *id {
                        return Err(Error::corrupt(
                            &what,
                            format!("blob {} does not hash to its id", id.short()),
                        ));
                    }
                } else {
                    let whole = if verify {
                        self.decode_encoded(id, loc.kind, loc.raw_len, &enc, &what)?
                    } else {
                        blob::decode(&enc, id, loc.raw_len, &what)?
                    };
                    place.copy_from_slice(&whole[range.clone()]);
                }
                Ok(())
            })?;
        Ok(prefix)
    }

    /// Reads, authenticates, decompresses and re-hashes a blob.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let (enc, what) = self.read_encoded_at(id, &loc)?;
        self.decode_encoded(id, loc.kind, loc.raw_len, &enc, &what)
    }

    /// Decodes a blob's authenticated plaintext (a delta run against its bases) and checks
    /// it hashes to `id`: the one check every reader of blobs makes.
    pub fn decode_encoded(
        &self,
        id: &BlobId,
        kind: BlobKind,
        raw_len: u32,
        enc: &[u8],
        what: &str,
    ) -> Result<Vec<u8>> {
        let data = match kind {
            BlobKind::DeltaRun => return Ok(self.decode_run(id, enc, u8::MAX, what)?.1),
            _ => blob::decode(enc, id, raw_len, what)?,
        };
        if self.keys.blob_id(kind, &data) != *id {
            return Err(Error::corrupt(
                what,
                format!("blob {} does not hash to its id", id.short()),
            ));
        }
        Ok(data)
    }

    /// Loads a tree blob.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let data = self.read_blob(id)?;
        Tree::decode(&data, &format!("tree {}", id.short()))
    }

    /// Forgets a snapshot: its file goes, then its index entry. Its data stays until a prune.
    pub fn forget_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.backend.remove(&format!("snapshots/{}", id.to_hex()))?;
        self.index().remove_snapshot(id)
    }

    /// Stores blobs in one new pack (durable, then indexed) and returns their ids. For tools
    /// and tests that write trees by hand; backups go through the archiver.
    pub fn store_blobs(&self, blobs: &[(BlobKind, Vec<u8>)]) -> Result<Vec<BlobId>> {
        let mut b = crate::pack::PackBuilder::new(&self.keys);
        let mut ids = Vec::new();
        for (kind, data) in blobs {
            let id = self.keys.blob_id(*kind, data);
            b.add(
                id,
                *kind,
                data.len() as u32,
                &blob::encode(data, self.config.zstd_level),
            );
            ids.push(id);
        }
        let (id, bytes, entries) = b.finish();
        self.backend.write(&pack_name(&id), &bytes)?;
        self.index().add_pack(&id, bytes.len() as u64, &entries)?;
        Ok(ids)
    }

    /// Writes a snapshot file (after every pack it needs is durable) and indexes it.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId> {
        let (id, bytes) = snap.seal(&self.keys);
        self.backend
            .write(&format!("snapshots/{}", id.to_hex()), &bytes)?;
        self.index()
            .add_snapshot(&id, self.label_of(snap), snap.time_ns)?;
        Ok(id)
    }

    fn label_of(&self, snap: &Snapshot) -> Option<[u8; 16]> {
        match (&snap.service, &snap.revision) {
            (Some(s), Some(r)) => Some(self.label_hash(s, r)),
            _ => None,
        }
    }

    /// The snapshots of `service@revision`, oldest first, as the snapshot files say: the
    /// index's, and in read mode (the index not synced at open) also snapshot files it lacks
    /// (a backup killed after writing its snapshot file and before indexing it leaves one
    /// that only a write would index), less entries whose file is gone.
    pub fn by_label(&self, service: &str, revision: &str) -> Result<Vec<SnapshotId>> {
        let label = self.label_hash(service, revision);
        let ids = self.index().by_label(&label)?;
        if self.synced {
            // A write-mode open has just indexed every snapshot file.
            return Ok(ids);
        }
        let files = self.snapshot_ids()?;
        // One scan of the index's snapshot records gives both what it holds and when.
        let indexed: IdMap<SnapshotId, i64> =
            self.index().snapshots_newest_first()?.into_iter().collect();
        let mut all = Vec::new();
        for id in files {
            match indexed.get(&id) {
                // The index's order is (time, id) too; entries whose file is gone (a
                // `forget` killed between deleting the file and the entry) are not
                // snapshots, and must not shift `~N`: only listed files are kept.
                Some(t) => {
                    if ids.contains(&id) {
                        all.push((*t, id));
                    }
                }
                None => match self.load_snapshot(&id) {
                    Ok(s) if self.label_of(&s) == Some(label) => all.push((s.time_ns, id)),
                    Ok(_) => {}
                    // Forgotten since it was listed.
                    Err(Error::NotFound(_)) => {}
                    // A damaged file is no snapshot to restore; `check` names it.
                    Err(e) if damage(&e) => {}
                    Err(e) => return Err(e),
                },
            }
        }
        all.sort();
        Ok(all.into_iter().map(|(_, id)| id).collect())
    }

    /// The index key of `service@revision`.
    pub fn label_hash(&self, service: &str, revision: &str) -> [u8; 16] {
        self.keys
            .label_hash(&[service.as_bytes(), revision.as_bytes()])
    }

    /// Reads one snapshot file.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = format!("snapshots/{}", id.to_hex());
        let bytes = read_bounded(
            self.backend.as_ref(),
            &name,
            crate::snapshot::MAX_SNAPSHOT_FILE as u64,
        )?;
        Snapshot::open(&self.keys, id, &bytes)
    }

    /// Every snapshot id, from the files.
    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let mut out = Vec::new();
        for name in self.backend.list("snapshots")? {
            let file = name.rsplit('/').next().unwrap_or_default();
            if let Ok(id) = SnapshotId::from_hex(file) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (good, damaged) = self.readable_snapshots()?;
        match damaged.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(good),
        }
    }

    /// Every snapshot whose file reads, oldest first, and the damaged ones (id and why) set
    /// apart: for listings, which name the damaged files and go on. A file that cannot be
    /// read just now (not damaged) fails the call.
    pub fn readable_snapshots(&self) -> Result<(Vec<(SnapshotId, Snapshot)>, Damaged)> {
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for id in self.snapshot_ids()? {
            match self.load_snapshot(&id) {
                Ok(s) => good.push((id, s)),
                // Forgotten since it was listed.
                Err(Error::NotFound(_)) => {}
                Err(e) if damage(&e) => bad.push((id, e)),
                Err(e) => return Err(e),
            }
        }
        good.sort_by_key(|(id, s)| (s.time_ns, *id));
        Ok((good, bad))
    }

    /// Resolves `latest`, `SERVICE@REV`, `SERVICE@REV~N` or an id prefix.
    pub fn find_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .snapshots()?
                .pop()
                .ok_or_else(|| Error::NotFound("the repository has no snapshots".into()));
        }
        if let Some((service, rest)) = spec.split_once('@') {
            let (revision, back) = match rest.rsplit_once('~') {
                Some((r, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (
                    r,
                    n.parse::<usize>()
                        .map_err(|_| Error::Invalid(format!("bad ~N in {spec:?}")))?,
                ),
                _ => (rest, 0),
            };
            let ids = self.by_label(service, revision)?;
            if ids.is_empty() {
                return Err(Error::NotFound(format!(
                    "no snapshot of {service}@{revision}"
                )));
            }
            let Some(id) = ids.len().checked_sub(1 + back).map(|i| ids[i]) else {
                return Err(Error::NotFound(format!(
                    "{service}@{revision} has {} snapshot(s); ~{back} goes past the first",
                    ids.len()
                )));
            };
            let snap = self.load_snapshot(&id)?;
            return Ok((id, snap));
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.is_empty() || !spec_l.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{spec:?} is not a snapshot: use an id prefix, `latest` or SERVICE@REVISION"
            )));
        }
        let matches: Vec<_> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec_l))
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(Error::NotFound(format!("no snapshot with id {spec}"))),
            _ => Err(Error::Invalid(format!(
                "{spec} matches {} snapshots; give more digits",
                matches.len()
            ))),
        }
    }

    /// Brings the index up to date with the files: indexes packs and snapshots it lacks, and
    /// drops entries of packs and snapshots that are gone (so a backup never deduplicates
    /// against data that no longer exists).
    pub fn sync_index(&self) -> Result<SyncReport> {
        self.sync(false)
    }

    /// The sync itself, also for `index rebuild`. A file that cannot be read for a reason
    /// other than damage fails the sync instead of being skipped: a snapshot left out of the
    /// index would make a state load pick an older one of its revision. Damaged files are
    /// reported and skipped. A rebuild also indexes the packs a
    /// prune has recorded for deletion. Such a prune gave up or was
    /// interrupted (a rebuild holds the exclusive lock, so none runs now); a snapshot may
    /// need those packs, and the next prune finishing the record hides them again, then
    /// keeps whichever a snapshot needs.
    fn sync(&self, rebuild: bool) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        self.backend.clean_temporaries()?;
        let mut on_disk = std::collections::HashSet::new();
        // Packs a prune has hidden stay hidden: no backup may deduplicate against them.
        let pending = if rebuild {
            Default::default()
        } else {
            self.pending_deletion()?
        };
        for name in self.backend.list("packs")? {
            let file = name.rsplit('/').next().unwrap_or_default();
            let Ok(id) = PackId::from_hex(file) else {
                continue;
            };
            on_disk.insert(id);
            if pending.contains(&id) || self.index().has_pack(&id)? {
                continue;
            }
            // A prune may have hidden it since the records were read: read them again.
            if !rebuild && self.pending_deletion()?.contains(&id) {
                continue;
            }
            let indexed = self.pack_toc(&id).and_then(|entries| {
                // A damaged delta run leaves its chunks unindexed; `check` names them.
                match self.index_pack(&id, self.backend.size(&name)?, &entries) {
                    Err(e) if damage(&e) => report.damaged.push((name.clone(), e.to_string())),
                    r => r?,
                }
                Ok(())
            });
            match indexed {
                Ok(()) => report.packs_added += 1,
                // Deleted since it was listed (a prune at work): nothing to index.
                Err(Error::NotFound(_)) => {}
                Err(e) if !damage(&e) => return Err(e),
                Err(e) => report.damaged.push((name, e.to_string())),
            }
        }
        let gone: Vec<PackId> = self
            .index()
            .packs()?
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| !on_disk.contains(id))
            .collect();
        if !gone.is_empty() {
            report.packs_removed = self.index().remove_packs(&gone)?;
            self.index().remove_dangling_members()?;
        }
        let snaps: std::collections::HashSet<SnapshotId> =
            self.snapshot_ids()?.into_iter().collect();
        for id in &snaps {
            if !self.index().has_snapshot(id)? {
                match self.load_snapshot(id) {
                    Ok(s) => {
                        self.index()
                            .add_snapshot(id, self.label_of(&s), s.time_ns)?;
                        report.snapshots_added += 1;
                    }
                    // Forgotten since it was listed: nothing to index.
                    Err(Error::NotFound(_)) => {}
                    Err(e) if !damage(&e) => return Err(e),
                    Err(e) => report
                        .damaged
                        .push((format!("snapshots/{id}"), e.to_string())),
                }
            }
        }
        for id in self.index().snapshots()? {
            if !snaps.contains(&id) {
                self.index().remove_snapshot(&id)?;
            }
        }
        Ok(report)
    }

    /// Packs that a prune has taken out of the index and will delete (see `prune.rs`).
    pub fn pending_deletion(&self) -> Result<std::collections::HashSet<PackId>> {
        crate::prune::pending(self)
    }

    /// The master key (for key management).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }
}

/// What [`Repo::sync_index`] or [`rebuild_index`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Packs newly indexed.
    pub packs_added: u64,
    /// Packs dropped from the index because their files are gone.
    pub packs_removed: u64,
    /// Snapshots newly indexed.
    pub snapshots_added: u64,
    /// Files that could not be read, with why.
    pub damaged: Vec<(String, String)>,
}

/// Deletes the index and makes it again from pack tables and snapshot files.
pub fn rebuild_index(path: &Path, password: &[u8]) -> Result<SyncReport> {
    rebuild_index_with(Arc::new(LocalBackend::new(path)), path, password)
}

/// [`rebuild_index`] over any backend (the index itself is always local, at `path/index`).
pub fn rebuild_index_with(
    backend: Arc<dyn Backend>,
    path: &Path,
    password: &[u8],
) -> Result<SyncReport> {
    if !backend.exists("config")? {
        return Err(Error::NoRepository(path.to_path_buf()));
    }
    // Check the password before deleting anything, and hold an exclusive lock for the whole
    // rebuild (no backup may write packs while the index is gone).
    let (u, _) = unlock(backend.as_ref(), password)?;
    let keys = Keys::derive_with(&u.master, &u.generations);
    let _lock = lock::acquire(&backend, &keys, true, "index rebuild")?;
    rebuild_index_locked(backend, path, password)
}

/// [`rebuild_index_with`] for a caller that already holds the exclusive lock.
pub(crate) fn rebuild_index_locked(
    backend: Arc<dyn Backend>,
    path: &Path,
    password: &[u8],
) -> Result<SyncReport> {
    // The new index is built beside the old one and swapped in only when complete, so a
    // rebuild killed midway leaves the old index (or, between the two renames, a complete
    // new one that the next open puts in place).
    let dir = path.join("index");
    let new = path.join("index.new");
    let old = path.join("index.old");
    for d in [&new, &old] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    Index::create(&new)?;
    let mut report = SyncReport::default();
    {
        let repo = Repo::open_backend(backend, path, password, Mode::Write, &new)?;
        // A pack or snapshot that cannot be read for a passing reason (an I/O error, not
        // damage) must not be left out of the new index: the sync (at the open, and this
        // one, which also indexes packs a prune hid) gives up on the whole rebuild then,
        // keeping the old index.
        report.damaged = repo.sync(true)?.damaged;
        report.packs_added = repo.index().packs()?.len() as u64;
        report.snapshots_added = repo.index().snapshots()?.len() as u64;
    }
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&new, &dir).map_err(|e| Error::io(&new, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(report)
}

/// Snapshot files that are damaged, with why (see [`Repo::readable_snapshots`]).
pub type Damaged = Vec<(SnapshotId, Error)>;

/// Whether an error says a file is damaged (as opposed to unreadable just now).
fn damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::NewerFormat { .. })
}

/// Completes an index swap that a rebuild was killed in the middle of (see
/// [`rebuild_index`]): the old index was moved aside, the new one is complete.
fn finish_index_swap(path: &Path) -> Result<()> {
    let (dir, new, old) = (
        path.join("index"),
        path.join("index.new"),
        path.join("index.old"),
    );
    if !dir.exists() && old.exists() && new.join("CURRENT").exists() {
        std::fs::rename(&new, &dir).map_err(|e| Error::io(&new, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Reads a small file whole, refusing one larger than `max` before reading it.
pub fn read_bounded(backend: &dyn Backend, name: &str, max: u64) -> Result<Vec<u8>> {
    let size = backend.size(name)?;
    if size > max {
        return Err(Error::corrupt(
            name,
            format!("{size} bytes, larger than any such file ({max})"),
        ));
    }
    backend.read(name)
}

/// Tries every key file; returns what it wraps and the key file's name.
fn unlock(backend: &dyn Backend, password: &[u8]) -> Result<(keyfile::Unwrapped, String)> {
    let mut damaged = Vec::new();
    // A key file that cannot be read just now (an I/O error, not damage) may be the one the
    // password opens: the open then fails with that error, not as a wrong password.
    let mut unreadable = None;
    let names = backend.list("keys")?;
    if names.is_empty() {
        return Err(Error::corrupt("keys/", "the repository has no key files"));
    }
    for name in names {
        let bytes = match read_bounded(backend, &name, keyfile::MAX_KEY_FILE) {
            Ok(b) => b,
            Err(e) if damage(&e) => {
                damaged.push(e.to_string());
                continue;
            }
            Err(e) => {
                unreadable.get_or_insert(e);
                continue;
            }
        };
        match keyfile::open(&bytes, password, &name) {
            Ok(Some((u, _))) => return Ok((u, name)),
            Ok(None) => {}
            Err(e) => damaged.push(e.to_string()),
        }
    }
    if !damaged.is_empty() {
        eprintln!("warning: damaged key files: {}", damaged.join("; "));
    }
    Err(unreadable.unwrap_or(Error::WrongPassword))
}

/// Key management.
impl Repo {
    /// Every key file with its metadata (only those this password opens show details).
    pub fn list_keys(&self, password: &[u8]) -> Result<Vec<(String, Option<keyfile::KeyFile>)>> {
        let mut out = Vec::new();
        for name in self.backend.list("keys")? {
            let bytes = read_bounded(self.backend.as_ref(), &name, keyfile::MAX_KEY_FILE)?;
            let kf = keyfile::open(&bytes, password, &name)
                .ok()
                .flatten()
                .map(|(_, k)| k);
            out.push((name, kf));
        }
        Ok(out)
    }

    /// Adds a key file wrapping the master key under `new_password`; returns its name.
    pub fn add_key(&self, new_password: &[u8]) -> Result<String> {
        self.write_key_file(&self.generations, new_password)
    }

    fn write_key_file(&self, generations: &[MasterKey], new_password: &[u8]) -> Result<String> {
        let kf = keyfile::create(
            &self.master,
            generations,
            new_password,
            self.config.kdf,
            &lock::hostname(),
            &whoami(),
            crate::now_ns(),
        )?;
        let name = format!("keys/{}", hex::encode(random_array::<16>()));
        self.backend.write(&name, &kf)?;
        Ok(name)
    }

    /// Removes a key file; refuses to remove the last one or the one in use.
    pub fn remove_key(&self, name: &str) -> Result<()> {
        let name = if name.starts_with("keys/") {
            name.to_string()
        } else {
            format!("keys/{name}")
        };
        let all = self.backend.list("keys")?;
        let matches: Vec<&String> = all.iter().filter(|n| n.starts_with(&name)).collect();
        let target = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(Error::NotFound(format!("no key file {name}"))),
            _ => return Err(Error::Invalid(format!("{name} matches several key files"))),
        };
        if target == self.key_name {
            return Err(Error::Invalid(
                "refusing to remove the key file this password opened; open with another key"
                    .into(),
            ));
        }
        if all.len() <= 1 {
            return Err(Error::Invalid(
                "refusing to remove the last key file".into(),
            ));
        }
        self.backend.remove(&target)
    }

    /// Replaces the key file in use with one for `new_password` (the new file is written first).
    pub fn change_password(&self, new_password: &[u8]) -> Result<String> {
        let name = self.add_key(new_password)?;
        self.backend.remove(&self.key_name)?;
        Ok(name)
    }

    /// `key rotate`: draws the key of a new generation, which every object written from now on
    /// is sealed under, and replaces the key file in use with one that wraps it too (same
    /// password). Other key files cannot be given the new key without their passwords: with
    /// `remove_others` they are removed, otherwise the rotation is refused. Returns the new
    /// key file's name, the new generation, and the key files removed.
    pub fn rotate_key(
        &self,
        password: &[u8],
        remove_others: bool,
    ) -> Result<(String, u32, Vec<String>)> {
        let others: Vec<String> = self
            .backend
            .list("keys")?
            .into_iter()
            .filter(|n| *n != self.key_name)
            .collect();
        if !others.is_empty() && !remove_others {
            return Err(Error::Invalid(format!(
                "{} other key file(s) exist ({}); they cannot be given the new key generation \
                 without their passwords: pass --remove-other-keys to remove them (then `cairn \
                 key add` new ones), or remove them first",
                others.len(),
                others
                    .iter()
                    .map(|n| n.trim_start_matches("keys/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if self.generations.len() >= keyfile::MAX_GENERATIONS {
            return Err(Error::Invalid(format!(
                "the repository already has {} key generations, the most a key file holds",
                keyfile::MAX_GENERATIONS
            )));
        }
        let mut generations = self.generations.clone();
        generations.push(MasterKey::generate());
        // The new key file first; only then does the old one go.
        let name = self.write_key_file(&generations, password)?;
        self.backend.remove(&self.key_name)?;
        for o in &others {
            self.backend.remove(o)?;
        }
        Ok((name, generations.len() as u32, others))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::RunHeader;

    fn repo() -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let kdf = KdfParams {
            m_kib: 8,
            t: 1,
            p: 1,
        };
        init(&dir.path().join("r"), b"pw", kdf).unwrap();
        let repo = Repo::open(&dir.path().join("r"), b"pw", Mode::Write).unwrap();
        (dir, repo)
    }

    /// Stores delta runs as a hostile key holder could: any header, any bases.
    fn store_runs(repo: &Repo, runs: &[(RunHeader, Vec<u8>)]) -> Vec<BlobId> {
        let runs: Vec<_> = runs
            .iter()
            .map(|(h, run)| (h.clone(), run.clone(), vec![b'x'; h.prefix_len as usize]))
            .collect();
        store_runs_against(repo, &runs)
    }

    /// Stores delta runs, each encoded against the prefix given.
    fn store_runs_against(repo: &Repo, runs: &[(RunHeader, Vec<u8>, Vec<u8>)]) -> Vec<BlobId> {
        let mut b = crate::pack::PackBuilder::new(&repo.keys);
        let mut ids = Vec::new();
        for (h, run, prefix) in runs {
            let id = repo.keys.run_id(run);
            let plain = crate::delta::encode(h, run, prefix, 0, 3).unwrap();
            b.add(id, BlobKind::DeltaRun, run.len() as u32, &plain);
            ids.push(id);
        }
        let (id, bytes, entries) = b.finish();
        repo.backend.write(&pack_name(&id), &bytes).unwrap();
        repo.index_pack(&id, bytes.len() as u64, &entries).unwrap();
        ids
    }

    fn run_of(repo: &Repo, member: &[u8], depth: u8, base: (BlobId, u32)) -> (RunHeader, Vec<u8>) {
        let h = RunHeader {
            depth,
            members: vec![(repo.keys.chunk_id(member), member.len() as u32)],
            bases: vec![base],
            skip: 0,
            prefix_len: base.1,
        };
        (h, member.to_vec())
    }

    fn assert_refused(r: Result<Vec<u8>>) {
        match r {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("expected a damaged-data error, got {other:?}"),
        }
    }

    #[test]
    fn a_prefix_is_put_together_from_plain_chunks_and_the_stretches_of_runs() {
        let (_d, repo) = repo();
        let text: Vec<u8> = (0..6000u32)
            .flat_map(|i| format!("row {i} of the table, ").into_bytes())
            .take(40_000)
            .collect();
        let p = text[..20_000].to_vec();
        let ip = repo.store_blobs(&[(BlobKind::Data, p.clone())]).unwrap()[0];
        // A member of a run against the plain chunk: the chunk with rows changed.
        let mut m = p.clone();
        m[5_000..5_010].copy_from_slice(b"0123456789");
        m.splice(12_000..12_000, b"a row added".iter().copied());
        let (h, run) = run_of(&repo, &m, 1, (ip, p.len() as u32));
        store_runs_against(&repo, &[(h, run, p.clone())]);
        let im = repo.keys.chunk_id(&m);
        let bases = [(im, m.len() as u32), (ip, p.len() as u32)];
        let plan = crate::delta::prefix_plan(&bases, 10, (m.len() - 10 + 1_000) as u32);
        let prefix = repo.base_prefix(&bases, &plan).unwrap();
        assert_eq!(prefix, [&m[10..], &p[..1_000]].concat());
        // A base of another length than its header says is refused.
        let wrong = [(ip, p.len() as u32 - 1)];
        let plan = crate::delta::prefix_plan(&wrong, 0, 100);
        assert!(matches!(
            repo.base_prefix(&wrong, &plan),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn reads_under_way_at_once_decode_a_chunk_they_share_once() {
        let (_d, repo) = repo();
        let (a, b) = (vec![7u8; 30_000], vec![9u8; 20_000]);
        let ids = repo
            .store_blobs(&[(BlobKind::Data, a.clone()), (BlobKind::Data, b.clone())])
            .unwrap();
        // Two reads at once (two runs' prefixes) that both need `a`: one slot, one decode.
        let first = PlainReads::new(&repo, vec![ids[0], ids[1]]).read_all();
        let second = PlainReads::new(&repo, vec![ids[0]]);
        assert!(Arc::ptr_eq(&first.slots[&ids[0]], &second.slots[&ids[0]]));
        let (x, y) = (first.get(&ids[0]).unwrap(), second.get(&ids[0]).unwrap());
        assert!(Arc::ptr_eq(&x, &y), "decoded twice");
        assert_eq!(*x, a);
        assert_eq!(*first.get(&ids[1]).unwrap(), b);
        // Once no read holds it, a later read gets a slot of its own, filled from the chunks
        // kept (the same bytes, not decoded again).
        let gone = Arc::downgrade(&first.slots[&ids[0]]);
        first.keep();
        drop(second);
        assert!(gone.upgrade().is_none(), "the slot outlived its reads");
        let third = PlainReads::new(&repo, vec![ids[0]]);
        assert!(
            Arc::ptr_eq(&third.get(&ids[0]).unwrap(), &x),
            "decoded again"
        );
    }

    #[test]
    fn a_run_based_on_its_own_chunk_is_refused() {
        let (_d, repo) = repo();
        let a = b"chunk a, which names itself as its base".to_vec();
        let own = (repo.keys.chunk_id(&a), a.len() as u32);
        let (h, run) = run_of(&repo, &a, 1, own);
        store_runs(&repo, &[(h, run)]);
        assert_refused(repo.read_chunk(&own.0));
    }

    #[test]
    fn two_runs_based_on_each_other_are_refused() {
        let (_d, repo) = repo();
        let (a, b) = (b"chunk a of run A".to_vec(), b"chunk b of run B".to_vec());
        let ida = (repo.keys.chunk_id(&a), a.len() as u32);
        let idb = (repo.keys.chunk_id(&b), b.len() as u32);
        // Each claims to be deeper than the other's base may be: one of the two lies.
        let ra = run_of(&repo, &a, 3, idb);
        let rb = run_of(&repo, &b, 3, ida);
        store_runs(&repo, &[ra, rb]);
        assert_refused(repo.read_chunk(&ida.0));
        assert_refused(repo.read_chunk(&idb.0));
        let out = repo.chunks(&[ida.0, idb.0]);
        assert!(out.iter().all(|r| matches!(r, Err(Error::Corrupt { .. }))));
    }
}
