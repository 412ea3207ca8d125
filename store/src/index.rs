//! The RocksDB index: a cache of what pack tables and snapshot files say, rebuilt from them by
//! `cairn index rebuild`. Spec of the key layout: `format-spec/08-index.md`.
//!
//! Every key is an id or a keyed hash, so no file name, service or revision label is stored
//! in RocksDB's files:
//!
//! ```text
//! 'b' blob id [32]                        → pack id [32] | offset u64 | stored u32 | raw u32 | slot u32 | kind u8
//! 'p' pack id [32]                        → size u64 | blobs u32
//! 's' snapshot id [32]                    → label hash [16] | time i64 (ns)
//! 'l' label hash [16] | time u64 BE | id  → (empty)   one per snapshot with service and revision
//! 'v' pack id [32]                        → time i64 (ns): when `check` last read it whole
//! 'm' chunk id [32]                       → run id [32] | offset u32 | length u32
//!                                           a chunk stored inside a delta run (`delta.rs`)
//! ```

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::pack;

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack.
    pub pack: PackId,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Sealed length.
    pub stored_len: u32,
    /// Plaintext length.
    pub raw_len: u32,
    /// Slot in the pack (its nonce).
    pub slot: u32,
    /// Kind.
    pub kind: BlobKind,
}

impl Location {
    fn encode(&self) -> [u8; 53] {
        let mut v = [0u8; 53];
        v[..32].copy_from_slice(&self.pack.0);
        v[32..40].copy_from_slice(&self.offset.to_le_bytes());
        v[40..44].copy_from_slice(&self.stored_len.to_le_bytes());
        v[44..48].copy_from_slice(&self.raw_len.to_le_bytes());
        v[48..52].copy_from_slice(&self.slot.to_le_bytes());
        v[52] = self.kind as u8;
        v
    }
    fn decode(v: &[u8]) -> Result<Self> {
        if v.len() != 53 {
            return Err(Error::Index(
                "blob entry of the wrong length: run `cairn index rebuild`".into(),
            ));
        }
        Ok(Self {
            pack: PackId(v[..32].try_into().expect("32")),
            offset: u64::from_le_bytes(v[32..40].try_into().expect("8")),
            stored_len: u32::from_le_bytes(v[40..44].try_into().expect("4")),
            raw_len: u32::from_le_bytes(v[44..48].try_into().expect("4")),
            slot: u32::from_le_bytes(v[48..52].try_into().expect("4")),
            kind: BlobKind::from_u8(v[52], "index entry")?,
        })
    }
}

/// The open index.
///
/// RocksDB lets one process at a time open a database for writing, and a backup or a prune
/// may run for a long time. So no process holds it open for writing: reads go through a
/// read-only view (every table file opened up front, so a concurrent compaction cannot pull
/// one away), and each write opens the database for writing just long enough to apply one
/// batch and flush it, then refreshes the view. Concurrent writers take turns in
/// milliseconds instead of failing as "locked" for the length of a backup.
pub struct Index {
    dir: PathBuf,
    view: RwLock<DB>,
}

fn ix(e: rocksdb::Error) -> Error {
    let s = e.to_string();
    if s.contains("lock") && (s.contains("LOCK") || s.contains("Resource temporarily unavailable"))
    {
        Error::Locked("another cairn process is writing to this repository's index".into())
    } else if s.contains("No space left") {
        Error::NoSpace {
            path: "index".into(),
        }
    } else {
        Error::Index(s)
    }
}

fn key(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(prefix);
    k.extend_from_slice(id);
    k
}

fn ro_options() -> Options {
    let mut opts = Options::default();
    opts.set_max_open_files(-1);
    // Most lookups in a backup are of chunks not stored yet: a bloom filter per table file
    // (10 bits a key, about 1% false positives) answers those without reading its blocks.
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    // No LOG files: every open would rotate them, and processes opening the index at the same
    // time race on renaming and purging them (seen as "unlink LOG.old...: No such file").
    opts.set_info_logger(rocksdb::InfoLogger::new_callback_logger(
        rocksdb::LogLevel::Fatal,
        |_, _| {},
    ));
    opts
}

fn rw_options() -> Options {
    let mut opts = ro_options();
    opts.create_if_missing(true);
    opts
}

/// Opens a read-only view of the index. A write session of another process may delete a
/// log or table file between this open's listing of the directory and its reading of the
/// file (seen as "No such file or directory: while stat a file for size"): the open is
/// tried again, the listing then being without it.
fn open_view(dir: &Path) -> Result<DB> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match DB::open_for_read_only(&ro_options(), dir, false) {
            Ok(db) => return Ok(db),
            Err(e)
                if e.to_string().contains("No such file or directory")
                    && dir.join("CURRENT").exists()
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(ix(e)),
        }
    }
}

/// Level-0 table files at which a write session waits for compaction (RocksDB schedules it
/// at 4).
const L0_FILES: u64 = 4;

/// How long a write waits for another process's write session before giving up.
const WRITE_WAIT: Duration = Duration::from_secs(120);

impl Index {
    /// Creates an empty index.
    pub fn create(dir: &Path) -> Result<()> {
        let db = DB::open(&rw_options(), dir).map_err(ix)?;
        db.flush().map_err(ix)?;
        // The index is not encrypted (see SECURITY.md): RocksDB makes its files under the
        // umask, so the directory holding them is closed to everyone else.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(dir, e))
    }

    /// Opens an existing index.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join("CURRENT").exists() {
            return Err(Error::Index(format!(
                "{} is missing: run `cairn index rebuild`",
                dir.display()
            )));
        }
        let db = open_view(dir).map_err(|e| match e {
            Error::Index(m) => Error::Index(format!(
                "{m} (the index is only a cache of the packs: `cairn index rebuild` makes it again)"
            )),
            e => e,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            view: RwLock::new(db),
        })
    }

    fn db(&self) -> std::sync::RwLockReadGuard<'_, DB> {
        self.view.read().expect("not poisoned")
    }

    /// Applies a batch durably in a short write session, then refreshes the view.
    fn write(&self, batch: WriteBatch) -> Result<()> {
        let deadline = Instant::now() + WRITE_WAIT;
        let db = loop {
            match DB::open(&rw_options(), &self.dir) {
                Ok(db) => break db,
                Err(e) => match ix(e) {
                    Error::Locked(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    e => return Err(e),
                },
            }
        };
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo).map_err(ix)?;
        db.flush().map_err(ix)?;
        // Each session flushes its own table file into level 0, where a lookup searches
        // every file and a view opens each. Once there are a few, the compaction the flush
        // scheduled is let run (closing the session would cancel it): at 10 million
        // indexed blobs, lookups without it took 17–220 µs instead of a few.
        if db
            .property_int_value(rocksdb::properties::num_files_at_level(0))
            .map_err(ix)?
            .is_some_and(|n| n >= L0_FILES)
        {
            db.wait_for_compact(&rocksdb::WaitForCompactOptions::default())
                .map_err(ix)?;
        }
        drop(db);
        self.refresh()
    }

    /// Reopens the view so it sees every write made so far, by any process.
    pub fn refresh(&self) -> Result<()> {
        let fresh = open_view(&self.dir)?;
        *self.view.write().expect("not poisoned") = fresh;
        Ok(())
    }

    /// A blob's location.
    pub fn get(&self, id: &BlobId) -> Result<Option<Location>> {
        match self.db().get_pinned(key(b'b', &id.0)).map_err(ix)? {
            Some(v) => Ok(Some(Location::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Whether a chunk or other blob is indexed, on its own or inside an indexed delta run.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        Ok(self.part_kind(id)?.is_some())
    }

    /// How an indexed blob is stored, as the part kind a tree names it with
    /// ([`crate::tree::PART_CHUNK`] on its own, [`crate::tree::PART_IN_RUN`] inside an
    /// indexed delta run); `None` when it is not indexed.
    pub fn part_kind(&self, id: &BlobId) -> Result<Option<u8>> {
        let db = self.db();
        if db.get_pinned(key(b'b', &id.0)).map_err(ix)?.is_some() {
            return Ok(Some(crate::tree::PART_CHUNK));
        }
        match db.get_pinned(key(b'm', &id.0)).map_err(ix)? {
            Some(v)
                if v.len() == 40 && db.get_pinned(key(b'b', &v[..32])).map_err(ix)?.is_some() =>
            {
                Ok(Some(crate::tree::PART_IN_RUN))
            }
            _ => Ok(None),
        }
    }

    /// Drops the member records of delta runs that are no longer indexed (after their packs
    /// were deleted); returns how many.
    pub fn remove_dangling_members(&self) -> Result<u64> {
        let mut batch = WriteBatch::default();
        let mut n = 0;
        {
            let db = self.db();
            for item in db.iterator(IteratorMode::From(b"m", Direction::Forward)) {
                let (k, v) = item.map_err(ix)?;
                if k.first() != Some(&b'm') {
                    break;
                }
                if v.len() != 40 || db.get_pinned(key(b'b', &v[..32])).map_err(ix)?.is_none() {
                    batch.delete(&k);
                    n += 1;
                }
            }
        }
        if n > 0 {
            self.write(batch)?;
        }
        Ok(n)
    }

    /// Where a chunk stored inside a delta run is: the run, its offset and length there.
    pub fn member(&self, id: &BlobId) -> Result<Option<(BlobId, u32, u32)>> {
        match self.db().get_pinned(key(b'm', &id.0)).map_err(ix)? {
            Some(v) if v.len() == 40 => Ok(Some((
                BlobId(v[..32].try_into().expect("32")),
                u32::from_le_bytes(v[32..36].try_into().expect("4")),
                u32::from_le_bytes(v[36..40].try_into().expect("4")),
            ))),
            Some(_) => Err(Error::Index(
                "member entry of the wrong length: run `cairn index rebuild`".into(),
            )),
            None => Ok(None),
        }
    }

    /// Records the chunks a delta run is made of (after the run's pack is indexed).
    pub fn add_members(&self, run: &BlobId, members: &[(BlobId, u32)]) -> Result<()> {
        let mut batch = WriteBatch::default();
        member_records(&mut batch, run, members);
        self.write(batch)
    }

    /// Calls `f` for every chunk stored inside a delta run: its id and its run's.
    pub fn for_each_member(&self, mut f: impl FnMut(&BlobId, &BlobId)) -> Result<()> {
        let db = self.db();
        for item in db.iterator(IteratorMode::From(b"m", Direction::Forward)) {
            let (k, v) = item.map_err(ix)?;
            if k.first() != Some(&b'm') {
                break;
            }
            if k.len() != 33 || v.len() != 40 {
                return Err(Error::Index(
                    "member entry of the wrong length: run `cairn index rebuild`".into(),
                ));
            }
            f(
                &BlobId(k[1..].try_into().expect("32")),
                &BlobId(v[..32].try_into().expect("32")),
            );
        }
        Ok(())
    }

    /// Records a pack and all its blobs.
    pub fn add_pack(&self, id: &PackId, size: u64, entries: &[pack::Entry]) -> Result<()> {
        let mut batch = WriteBatch::default();
        pack_records(&mut batch, id, size, entries, &[]);
        self.write(batch)
    }

    /// Records packs, all their blobs, and the chunks inside the delta runs in them, in one
    /// write (a process killed in between must not leave runs whose chunks are unknown).
    pub fn add_packs(&self, packs: &[NewPack]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for p in packs {
            pack_records(&mut batch, &p.id, p.size, &p.entries, &p.runs);
        }
        self.write(batch)
    }

    /// Calls `f` for every indexed blob, in id order.
    pub fn for_each_blob(&self, mut f: impl FnMut(&BlobId, &Location)) -> Result<()> {
        let db = self.db();
        for item in db.iterator(IteratorMode::From(b"b", Direction::Forward)) {
            let (k, v) = item.map_err(ix)?;
            if k.first() != Some(&b'b') {
                break;
            }
            if k.len() != 33 {
                return Err(Error::Index(
                    "blob key of the wrong length: run `cairn index rebuild`".into(),
                ));
            }
            f(
                &BlobId(k[1..].try_into().expect("32")),
                &Location::decode(&v)?,
            );
        }
        Ok(())
    }

    /// Records that `packs` were read and verified whole at `time_ns`.
    pub fn set_verified(&self, packs: &[PackId], time_ns: i64) -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for p in packs {
            batch.put(key(b'v', &p.0), time_ns.to_le_bytes());
        }
        self.write(batch)
    }

    /// When each pack was last read and verified whole (packs never verified are absent).
    pub fn verified(&self) -> Result<std::collections::HashMap<PackId, i64>> {
        let mut out = std::collections::HashMap::new();
        let db = self.db();
        for item in db.iterator(IteratorMode::From(b"v", Direction::Forward)) {
            let (k, v) = item.map_err(ix)?;
            if k.first() != Some(&b'v') {
                break;
            }
            if k.len() == 33 && v.len() == 8 {
                out.insert(
                    PackId(k[1..].try_into().expect("32")),
                    i64::from_le_bytes(v[..].try_into().expect("8")),
                );
            }
        }
        Ok(out)
    }

    /// Whether a pack is indexed.
    pub fn has_pack(&self, id: &PackId) -> Result<bool> {
        Ok(self
            .db()
            .get_pinned(key(b'p', &id.0))
            .map_err(ix)?
            .is_some())
    }

    /// Every indexed pack with its size and blob count.
    pub fn packs(&self) -> Result<Vec<(PackId, u64, u32)>> {
        let mut out = Vec::new();
        let db = self.db();
        for item in db.iterator(IteratorMode::From(b"p", Direction::Forward)) {
            let (k, v) = item.map_err(ix)?;
            if k.first() != Some(&b'p') {
                break;
            }
            if k.len() != 33 || v.len() != 12 {
                return Err(Error::Index(
                    "pack entry of the wrong length: run `cairn index rebuild`".into(),
                ));
            }
            out.push((
                PackId(k[1..].try_into().expect("32")),
                u64::from_le_bytes(v[..8].try_into().expect("8")),
                u32::from_le_bytes(v[8..].try_into().expect("4")),
            ));
        }
        Ok(out)
    }

    /// Records a snapshot under its label hash (all zeros for an unlabelled one).
    pub fn add_snapshot(
        &self,
        id: &SnapshotId,
        label: Option<[u8; 16]>,
        time_ns: i64,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&label.unwrap_or([0; 16]));
        v.extend_from_slice(&time_ns.to_le_bytes());
        batch.put(key(b's', &id.0), v);
        if let Some(l) = label {
            batch.put(label_key(&l, time_ns, id), b"");
        }
        self.write(batch)
    }

    /// Whether a snapshot is indexed.
    pub fn has_snapshot(&self, id: &SnapshotId) -> Result<bool> {
        Ok(self
            .db()
            .get_pinned(key(b's', &id.0))
            .map_err(ix)?
            .is_some())
    }

    /// Forgets a snapshot.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        let Some(v) = self.db().get(key(b's', &id.0)).map_err(ix)? else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        if v.len() == 24 {
            let l: [u8; 16] = v[..16].try_into().expect("16");
            let t = i64::from_le_bytes(v[16..].try_into().expect("8"));
            batch.delete(label_key(&l, t, id));
        }
        batch.delete(key(b's', &id.0));
        self.write(batch)
    }

    /// Calls `f` with the key and value of every entry whose key starts with `prefix`.
    fn scan(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
        let db = self.db();
        for item in db.iterator(IteratorMode::From(prefix, Direction::Forward)) {
            let (k, v) = item.map_err(ix)?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, &v);
        }
        Ok(())
    }

    /// Every indexed snapshot id.
    pub fn snapshots(&self) -> Result<Vec<SnapshotId>> {
        let mut out = Vec::new();
        self.scan(b"s", |k, _| {
            if k.len() == 33 {
                out.push(SnapshotId(k[1..].try_into().expect("32")));
            }
        })?;
        Ok(out)
    }

    /// Every indexed snapshot id with its time (ns), newest first.
    pub fn snapshots_newest_first(&self) -> Result<Vec<(SnapshotId, i64)>> {
        let mut out = Vec::new();
        self.scan(b"s", |k, v| {
            if k.len() == 33 && v.len() == 24 {
                let t = i64::from_le_bytes(v[16..].try_into().expect("8"));
                out.push((SnapshotId(k[1..].try_into().expect("32")), t));
            }
        })?;
        out.sort_by_key(|(id, t)| std::cmp::Reverse((*t, *id)));
        Ok(out)
    }

    /// Snapshots with a label hash, oldest first.
    pub fn by_label(&self, label: &[u8; 16]) -> Result<Vec<SnapshotId>> {
        let mut prefix = vec![b'l'];
        prefix.extend_from_slice(label);
        let mut out = Vec::new();
        self.scan(&prefix, |k, _| {
            if k.len() == 1 + 16 + 8 + 32 {
                out.push(SnapshotId(k[25..].try_into().expect("32")));
            }
        })?;
        Ok(out)
    }

    /// Drops packs (and every blob entry pointing into them) from the index; returns how
    /// many packs were dropped.
    pub fn remove_packs(&self, gone: &[PackId]) -> Result<u64> {
        let gone: std::collections::HashSet<&PackId> = gone.iter().collect();
        let mut batch = WriteBatch::default();
        {
            let db = self.db();
            let mut runs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
            for item in db.iterator(IteratorMode::From(b"b", Direction::Forward)) {
                let (k, v) = item.map_err(ix)?;
                if k.first() != Some(&b'b') {
                    break;
                }
                if v.len() >= 32 && gone.contains(&PackId(v[..32].try_into().expect("32"))) {
                    batch.delete(&k);
                    if v.len() == 53 && v[52] == BlobKind::DeltaRun as u8 {
                        runs.insert(k[1..].to_vec());
                    }
                }
            }
            // The member records of the runs that go stay: a prune hides packs this way and
            // may put them back; `contains` does not count a chunk whose run is gone, and
            // `remove_dangling_members` drops such records once packs are deleted.
            let _ = runs;
        }
        for p in &gone {
            batch.delete(key(b'p', &p.0));
        }
        self.write(batch)?;
        Ok(gone.len() as u64)
    }
}

/// A pack to index: its id, size, table and the delta runs in it with their members.
pub struct NewPack {
    /// The pack.
    pub id: PackId,
    /// Its size in bytes.
    pub size: u64,
    /// Its table.
    pub entries: Vec<pack::Entry>,
    /// Delta runs in it, each with its members (chunk id, offset in the run).
    pub runs: Vec<(BlobId, Vec<(BlobId, u32)>)>,
}

/// The records of a pack: its blobs, its runs' members and the pack itself.
fn pack_records(
    batch: &mut WriteBatch,
    id: &PackId,
    size: u64,
    entries: &[pack::Entry],
    runs: &[(BlobId, Vec<(BlobId, u32)>)],
) {
    for (run, members) in runs {
        member_records(batch, run, members);
    }
    for (i, e) in entries.iter().enumerate() {
        let loc = Location {
            pack: *id,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            slot: i as u32,
            kind: e.kind,
        };
        batch.put(key(b'b', &e.id.0), loc.encode());
    }
    let mut pv = Vec::with_capacity(12);
    pv.extend_from_slice(&size.to_le_bytes());
    pv.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    batch.put(key(b'p', &id.0), pv);
}

fn member_records(batch: &mut WriteBatch, run: &BlobId, members: &[(BlobId, u32)]) {
    let mut off = 0u32;
    for (id, len) in members {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&run.0);
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        batch.put(key(b'm', &id.0), v);
        off += len;
    }
}

fn label_key(label: &[u8; 16], time_ns: i64, id: &SnapshotId) -> Vec<u8> {
    let mut k = Vec::with_capacity(57);
    k.push(b'l');
    k.extend_from_slice(label);
    // Offset binary so that negative times still sort before positive ones.
    k.extend_from_slice(&((time_ns as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&id.0);
    k
}
