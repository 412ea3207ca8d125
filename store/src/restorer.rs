//! Restore: writes a snapshot's tree under a target directory, and never anywhere else.
//!
//! Every name is checked to be one plain path component; duplicate names, hard links that
//! leave the restored set and device nodes are refused. Directories are descended only when
//! they are real directories this restore made or found (never through a symlink), files are
//! created without a name (`O_TMPFILE`; elsewhere with `O_NOFOLLOW` under a temporary name)
//! and named once every byte was authenticated, so a damaged blob never leaves a
//! plausible-looking file behind. Files are written by several threads at once, and the file
//! system is synced once, at the end.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};

use crate::archiver::valid_component;
use crate::blob::Bytes;
use crate::error::{Error, Result};
use crate::fsmeta;
use crate::id::BlobId;
use crate::repo::Repo;
use crate::tree::{Entry, Node, Part, Tree};

/// Hears about a restore's progress.
pub trait Progress: Sync {
    /// `n` more bytes were written.
    fn bytes(&self, _n: u64) {}
    /// Something was skipped.
    fn warn(&self, _msg: &str) {}
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreStats {
    /// Files written.
    pub files: u64,
    /// Directories made.
    pub dirs: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries skipped with a warning.
    pub skipped: Vec<String>,
    /// Files that could not be restored because their data is damaged or missing; nothing
    /// was written for them.
    pub failed: Vec<String>,
}

fn display(rel: &[Vec<u8>]) -> String {
    rel.iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Splits a snapshot path (`a/b/c`, leading `/` allowed) into checked components.
pub fn split_path(path: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if !valid_component(c.as_bytes()) {
            return Err(Error::Invalid(format!(
                "{path:?} is not a path inside a snapshot"
            )));
        }
        out.push(c.as_bytes().to_vec());
    }
    Ok(out)
}

/// Finds the entry at `path` (components) below the tree `root`.
pub fn lookup(repo: &Repo, root: &BlobId, path: &[Vec<u8>]) -> Result<Entry> {
    let mut tree = repo.load_tree(root)?;
    for (i, c) in path.iter().enumerate() {
        let Some(e) = tree.entries.iter().find(|e| &e.name == c).cloned() else {
            // What is there instead, so a wrong name (or `-` for standard output, which
            // `dump` writes to anyway) is easy to correct.
            let names: Vec<String> = tree
                .entries
                .iter()
                .take(5)
                .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                .collect();
            let more = if tree.entries.len() > names.len() {
                ", …"
            } else {
                ""
            };
            let place = match i {
                0 => "at its top".to_string(),
                _ => format!("in {}", display(&path[..i])),
            };
            return Err(Error::NotFound(format!(
                "{} is not in the snapshot ({place}: {}{more})",
                display(&path[..=i]),
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        if i + 1 == path.len() {
            return Ok(e);
        }
        match e.node {
            Node::Dir(id) => tree = repo.load_tree(&id)?,
            _ => {
                return Err(Error::NotFound(format!(
                    "{} is not a directory",
                    display(&path[..=i])
                )));
            }
        }
    }
    Err(Error::Invalid(
        "an empty path names the snapshot's root, which is a tree".into(),
    ))
}

/// How many bytes of a file's chunks are read ahead (on every core) while the chunks before
/// them are written.
const READ_AHEAD: u64 = 8 << 20;

/// Writes a file's parts to `out`, authenticating every blob and checking every length.
/// Chunks are read and decoded in windows of [`READ_AHEAD`] bytes, the chunks of a window in
/// parallel, while the window before is written.
pub fn write_parts(
    repo: &Repo,
    parts: &[Part],
    out: &mut dyn Write,
    what: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut windows = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, p) in parts.iter().enumerate() {
        bytes += p.len as u64;
        if bytes >= READ_AHEAD || i + 1 == parts.len() {
            windows.push(&parts[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    let read = |w: &[Part]| -> Vec<Result<Bytes>> {
        let ids: Vec<BlobId> = w.iter().map(|p| p.id).collect();
        repo.chunks(&ids)
            .into_iter()
            .map(|r| r.map_err(|e| Error::corrupt(what, format!("cannot be read: {e}"))))
            .collect()
    };
    let mut n = 0u64;
    let mut write = |w: &[Part], chunks: Vec<Result<Bytes>>| -> Result<()> {
        for (p, data) in w.iter().zip(chunks) {
            let data = data?;
            if data.len() != p.len as usize {
                return Err(Error::corrupt(
                    what,
                    format!(
                        "blob {} has {} bytes, the tree says {}",
                        p.id.short(),
                        data.len(),
                        p.len
                    ),
                ));
            }
            out.write_all(&data).map_err(|e| Error::io(what, e))?;
            progress.bytes(data.len() as u64);
            n += data.len() as u64;
        }
        Ok(())
    };
    let Some((first, rest)) = windows.split_first() else {
        return Ok(0);
    };
    let prepare = |w: Option<&&[Part]>| {
        if let Some(w) = w {
            repo.prepare(&w.iter().map(|p| p.id).collect::<Vec<_>>());
        }
    };
    if rest.is_empty() {
        // One window (most files): no threads beside the read.
        write(first, read(first))?;
        return Ok(n);
    }
    let mut current = (*first, Vec::new());
    std::thread::scope(|s| {
        // The second window's runs are composed while the first is read.
        s.spawn(move || prepare(rest.first()));
        current.1 = read(first);
        for (i, w) in rest.iter().enumerate() {
            // The window after the next has its delta runs composed meanwhile.
            s.spawn(move || prepare(rest.get(i + 1)));
            let next = s.spawn(|| read(w));
            let written = write(current.0, std::mem::take(&mut current.1));
            let chunks = next
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            written?;
            current = (*w, chunks);
        }
        write(current.0, std::mem::take(&mut current.1))
    })?;
    Ok(n)
}

/// Restores the snapshot tree `root` (or the entry at `include` in it) into `target`.
pub fn restore(
    repo: &Repo,
    root: &BlobId,
    target: &Path,
    include: Option<&str>,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    let md = fs::symlink_metadata(target).map_err(|e| Error::io(target, e))?;
    if !md.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory",
            target.display()
        )));
    }
    let path = match include {
        Some(p) => split_path(p)?,
        None => Vec::new(),
    };
    let shared = Shared::new(repo, progress, Vec::new());
    run(shared, target.to_path_buf(), None, |w| {
        if path.is_empty() {
            let tree = repo.load_tree(root)?;
            w.tree(tree, &mut Vec::new())
        } else {
            let entry = lookup(repo, root, &path)?;
            let mut rel = Vec::new();
            for c in &path[..path.len() - 1] {
                rel.push(c.clone());
                w.make_dir(&rel)?;
            }
            w.entry(entry, &mut rel)
        }
    })
}

/// Restores one entry of the snapshot's root (a service's state item) to exactly `dest`,
/// which must not exist yet: a directory's tree goes into `dest`, a file becomes `dest`.
pub fn restore_entry(
    repo: &Repo,
    entry: &Entry,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::Invalid(format!("{} exists already", dest.display())));
    }
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(Error::Invalid(format!(
            "{} cannot be a restore destination",
            dest.display()
        )));
    };
    match &entry.node {
        Node::Dir(id) => {
            fs::create_dir(dest).map_err(|e| Error::io(dest, e))?;
            let shared = Shared::new(repo, progress, vec![entry.name.clone()]);
            run(shared, dest.to_path_buf(), Some(entry), |w| {
                let tree = repo.load_tree(id)?;
                w.tree(tree, &mut Vec::new())
            })
        }
        _ => {
            let mut e = entry.clone();
            e.name = name.as_bytes().to_vec();
            let shared = Shared::new(repo, progress, Vec::new());
            run(shared, parent.to_path_buf(), None, |w| {
                w.entry(e, &mut Vec::new())
            })
        }
    }
}

/// How many files are written at once. Creating and filling a small file costs the file
/// system more waiting than CPU (on ext4 here, 5,000 files of 64 KiB took 1.1–2.7 s from one
/// thread and 0.5 s from four), so there are more writers than cores.
fn file_writers() -> usize {
    // rayon's count, read once: `available_parallelism` reads cgroup files a call.
    rayon::current_num_threads().clamp(2, 8) * 2
}

/// A path in a snapshot, by components.
type SnapshotPath = Vec<Vec<u8>>;

/// A file for a writer: where it goes (`rel`, below the target) and its entry.
struct FileJob {
    rel: SnapshotPath,
    path: PathBuf,
    entry: Entry,
}

/// What the walker and the file writers share.
struct Shared<'a> {
    repo: &'a Repo,
    progress: &'a dyn Progress,
    /// The snapshot path that the target stands for (empty: the root).
    prefix: SnapshotPath,
    done: Mutex<Done>,
    /// Set on the first error: everyone stops taking work.
    stop: AtomicBool,
}

/// What the file writers did.
#[derive(Default)]
struct Done {
    /// Snapshot paths of the files written, for hard links.
    restored: HashSet<SnapshotPath>,
    files: u64,
    bytes: u64,
    failed: Vec<String>,
    error: Option<Error>,
}

impl<'a> Shared<'a> {
    fn new(repo: &'a Repo, progress: &'a dyn Progress, prefix: SnapshotPath) -> Self {
        Self {
            repo,
            progress,
            prefix,
            done: Mutex::new(Done::default()),
            stop: AtomicBool::new(false),
        }
    }

    fn done(&self) -> std::sync::MutexGuard<'_, Done> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Takes file jobs until the walker is done; the first error stops every writer.
    fn writer(&self, jobs: &Mutex<Receiver<FileJob>>) {
        loop {
            let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            if self.stopped() {
                continue;
            }
            if let Err(e) = self.write_file(job) {
                self.stop.store(true, Ordering::Relaxed);
                self.done().error.get_or_insert(e);
            }
        }
    }

    /// Writes one file without a name (or under a temporary one) and names it once every
    /// byte was authenticated; damaged data fails this file only.
    fn write_file(&self, job: FileJob) -> Result<()> {
        let FileJob {
            rel,
            path: p,
            entry,
        } = job;
        let Node::File(parts) = &entry.node else {
            unreachable!("only files are sent to writers")
        };
        clear(&p)?;
        let (mut f, tmp) = match unnamed_file(p.parent().expect("below the target"))
            .map_err(|err| Error::io(&p, err))?
        {
            Some(f) => (f, None),
            None => {
                let name = p.file_name().expect("has a name").as_bytes();
                let mut tmp_name = b".cairn-restore-".to_vec();
                tmp_name
                    .extend_from_slice(&crate::crypto::random_array::<4>().map(|b| b'a' + b % 26));
                tmp_name.push(b'-');
                tmp_name.extend_from_slice(&name[..name.len().min(200)]);
                let tmp = p.with_file_name(OsStr::from_bytes(&tmp_name));
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&tmp)
                    .map_err(|err| Error::io(&p, err))?;
                (f, Some(tmp))
            }
        };
        let what = display(&rel);
        let named = write_parts(self.repo, parts, &mut f, &what, self.progress).and_then(|n| {
            match &tmp {
                None => link_unnamed(&f, &p),
                Some(tmp) => fs::rename(tmp, &p),
            }
            .map(|()| n)
            .map_err(|err| Error::io(&p, err))
        });
        drop(f);
        let written = match named {
            Ok(n) => n,
            Err(err) => {
                // An unnamed file goes with its descriptor; a temporary name is removed.
                if let Some(tmp) = &tmp {
                    let _ = fs::remove_file(tmp);
                }
                if let Error::Corrupt { .. } = err {
                    let msg = err.to_string();
                    self.progress.warn(&msg);
                    self.done().failed.push(msg);
                    return Ok(());
                }
                return Err(err);
            }
        };
        finish_meta(&p, &entry, false, self.progress)?;
        let mut done = self.done();
        done.files += 1;
        done.bytes += written;
        done.restored
            .insert([self.prefix.as_slice(), rel.as_slice()].concat());
        Ok(())
    }
}

/// A new file in `dir` that has no name yet (`O_TMPFILE`), so that no file appears under
/// its name before its every byte was authenticated, nor after a crash midway; `None` where
/// the file system cannot make one (or `/proc`, through which it gets its name, is missing).
fn unnamed_file(dir: &Path) -> std::io::Result<Option<fs::File>> {
    static PROC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*PROC.get_or_init(|| Path::new("/proc/self/fd").is_dir()) {
        return Ok(None);
    }
    match OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Gives the unnamed file `f` the name `p`; fails if anything is at `p` (never follows it).
fn link_unnamed(f: &fs::File, p: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .expect("no NUL in a number");
    let to = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: both are NUL-terminated paths that live across the call.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Walks what `walk` gives below `target`: directories, symlinks and fifos are made as the
/// walk meets them, files are written by [`file_writers`] threads meanwhile (files larger
/// than [`READ_AHEAD`] one at a time, by one more thread, as each reads on every core),
/// and hard links and directories' metadata come last (`top`'s for the target itself, when
/// the target is a restored directory). The file system is synced once at the end, so a
/// restore that returns is on disk.
fn run(
    shared: Shared,
    target: PathBuf,
    top: Option<&Entry>,
    walk: impl FnOnce(&mut Walker) -> Result<()>,
) -> Result<RestoreStats> {
    let shared = &shared;
    // Opened before the target's own mode is set, which may forbid reading it.
    let handle = fs::File::open(&target).map_err(|e| Error::io(&target, e))?;
    let (small_tx, small_rx) = mpsc::sync_channel(64);
    let (large_tx, large_rx) = mpsc::sync_channel(2);
    let (small_rx, large_rx) = (Mutex::new(small_rx), Mutex::new(large_rx));
    let mut w = Walker {
        shared,
        target: target.clone(),
        small: Some(small_tx),
        large: Some(large_tx),
        links: Vec::new(),
        dirs: Vec::new(),
        stats: RestoreStats::default(),
    };
    let walked = std::thread::scope(|s| {
        for _ in 0..file_writers() {
            s.spawn(|| shared.writer(&small_rx));
        }
        s.spawn(|| shared.writer(&large_rx));
        let walked = walk(&mut w);
        if walked.is_err() {
            shared.stop.store(true, Ordering::Relaxed);
        }
        // Closing the queues ends the writers once they have emptied them.
        (w.small, w.large) = (None, None);
        walked
    });
    let done = std::mem::take(&mut *shared.done());
    walked?;
    if let Some(e) = done.error {
        return Err(e);
    }
    let mut stats = std::mem::take(&mut w.stats);
    (stats.files, stats.bytes, stats.failed) = (done.files, done.bytes, done.failed);
    stats.failed.sort();
    for (rel, to) in std::mem::take(&mut w.links) {
        w.hard_link(&rel, &to, &done.restored, &mut stats)?;
    }
    // Deepest first: a directory's time is set after everything in it is written.
    for (p, e) in std::mem::take(&mut w.dirs) {
        finish_meta(&p, &e, false, shared.progress)?;
    }
    if let Some(e) = top {
        finish_meta(&target, e, false, shared.progress)?;
        stats.dirs += 1;
    }
    sync_filesystem(&handle, &target)?;
    Ok(stats)
}

/// Makes everything written to the file system that holds `dir` (open as `d`) durable: one
/// sync at the end instead of one per file, which on ext4 cost a journal commit each.
fn sync_filesystem(d: &fs::File, dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Goes through the snapshot's trees in order, making what is cheap to make and handing
/// files to the writers.
struct Walker<'s, 'a> {
    shared: &'s Shared<'a>,
    target: PathBuf,
    small: Option<SyncSender<FileJob>>,
    large: Option<SyncSender<FileJob>>,
    /// Hard links (where, to which snapshot path), made once every file is written.
    links: Vec<(SnapshotPath, SnapshotPath)>,
    /// Directories whose metadata is set at the end, deepest first.
    dirs: Vec<(PathBuf, Entry)>,
    stats: RestoreStats,
}

impl Walker<'_, '_> {
    fn path(&self, rel: &[Vec<u8>]) -> PathBuf {
        let mut p = self.target.clone();
        for c in rel {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    /// Makes (or accepts) a real directory at `rel`; refuses to go through a symlink.
    fn make_dir(&mut self, rel: &[Vec<u8>]) -> Result<PathBuf> {
        let p = self.path(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
            }
            Err(_) => fs::create_dir(&p).map_err(|e| Error::io(&p, e))?,
        }
        // Owner-writable while children are written; the stored mode is set afterwards.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io(&p, e))?;
        Ok(p)
    }

    fn tree(&mut self, tree: Tree, rel: &mut Vec<Vec<u8>>) -> Result<()> {
        let mut seen = HashSet::new();
        for e in &tree.entries {
            if !valid_component(&e.name) {
                return Err(Error::Hostile {
                    path: format!("{}/{}", display(rel), String::from_utf8_lossy(&e.name)),
                    why: "an entry name must be one path component (no '/', NUL, '.' or '..')"
                        .into(),
                });
            }
            if !seen.insert(&e.name) {
                return Err(Error::Hostile {
                    path: format!("{}/{}", display(rel), String::from_utf8_lossy(&e.name)),
                    why: "the name appears twice in one directory".into(),
                });
            }
        }
        for e in tree.entries {
            if self.shared.stopped() {
                break;
            }
            self.entry(e, rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, e: Entry, rel: &mut Vec<Vec<u8>>) -> Result<()> {
        if !valid_component(&e.name) {
            return Err(Error::Hostile {
                path: display(rel),
                why: "not a plain path component".into(),
            });
        }
        rel.push(e.name.clone());
        let r = self.entry_at(e, rel);
        rel.pop();
        r
    }

    fn entry_at(&mut self, e: Entry, rel: &mut Vec<Vec<u8>>) -> Result<()> {
        let p = self.path(rel);
        let progress = self.shared.progress;
        match &e.node {
            Node::Dir(id) => {
                self.make_dir(rel)?;
                let tree = self.shared.repo.load_tree(id)?;
                self.tree(tree, rel)?;
                self.stats.dirs += 1;
                self.dirs.push((p, e));
            }
            Node::File(_) => {
                let queue = if e.size > READ_AHEAD {
                    &self.large
                } else {
                    &self.small
                };
                let job = FileJob {
                    rel: rel.clone(),
                    path: p,
                    entry: e,
                };
                // A send fails only when every writer is gone, which they are not before
                // the walk ends; an error they met is reported after it.
                let _ = queue.as_ref().expect("open while walking").send(job);
            }
            Node::Symlink(target) => {
                clear(&p)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)
                    .map_err(|err| Error::io(&p, err))?;
                finish_meta(&p, &e, true, progress)?;
            }
            Node::HardLink(to) => {
                if to.iter().any(|c| !valid_component(c)) || to.is_empty() {
                    return Err(Error::Hostile {
                        path: display(rel),
                        why: "hard link target is not a path inside the snapshot".into(),
                    });
                }
                self.links.push((rel.clone(), to.clone()));
            }
            Node::CharDevice(_) | Node::BlockDevice(_) => {
                let msg = format!(
                    "{}: device node not restored (refused for safety)",
                    display(rel)
                );
                progress.warn(&msg);
                self.stats.skipped.push(msg);
            }
            Node::Fifo => {
                clear(&p)?;
                fsmeta::mkfifo(&p, e.mode).map_err(|err| Error::io(&p, err))?;
                finish_meta(&p, &e, false, progress)?;
            }
        }
        Ok(())
    }

    /// Links `rel` to the file written for snapshot path `to`, if this restore wrote it.
    fn hard_link(
        &self,
        rel: &[Vec<u8>],
        to: &[Vec<u8>],
        restored: &HashSet<Vec<Vec<u8>>>,
        stats: &mut RestoreStats,
    ) -> Result<()> {
        let prefix = &self.shared.prefix;
        if !restored.contains(to) || !to.starts_with(prefix) {
            // Its file is outside what this restore writes (--include), or damaged.
            let msg = format!(
                "{}: hard link to {}, which this restore did not write; skipped",
                display(rel),
                display(to)
            );
            self.shared.progress.warn(&msg);
            stats.skipped.push(msg);
            return Ok(());
        }
        let p = self.path(rel);
        clear(&p)?;
        fs::hard_link(self.path(&to[prefix.len()..]), &p).map_err(|err| Error::io(&p, err))
    }
}

/// Removes a non-directory entry in the way (never follows it).
fn clear(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| Error::io(p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| Error::io(p, e)),
        Err(_) => Ok(()),
    }
}

fn finish_meta(p: &Path, e: &Entry, symlink: bool, progress: &dyn Progress) -> Result<()> {
    for (k, v) in &e.xattrs {
        if let Err(err) = fsmeta::set_xattr(p, k, v) {
            let msg = format!(
                "{}: xattr {}: {err}",
                p.display(),
                String::from_utf8_lossy(k)
            );
            progress.warn(&msg);
        }
    }
    if fsmeta::is_root() {
        let _ = fsmeta::lchown(p, e.uid, e.gid);
    }
    if !symlink {
        fs::set_permissions(p, fs::Permissions::from_mode(e.mode & 0o7777))
            .map_err(|err| Error::io(p, err))?;
    }
    fsmeta::set_mtime(p, e.mtime_ns).map_err(|err| Error::io(p, err))?;
    Ok(())
}
