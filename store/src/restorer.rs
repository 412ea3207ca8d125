//! Restore: writes a snapshot's tree under a target directory, and never anywhere else.
//!
//! Every name is checked to be one plain path component; duplicate names, hard links that
//! leave the restored set and device nodes are refused. Directories are descended only when
//! they are real directories this restore made or found (never through a symlink), files are
//! created with `O_NOFOLLOW` under a temporary name and renamed into place once every byte was
//! authenticated, so a damaged blob never leaves a plausible-looking file behind.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    let mut r = Restorer {
        repo,
        progress,
        target: target.to_path_buf(),
        restored: HashSet::new(),
        prefix: Vec::new(),
        stats: RestoreStats::default(),
    };
    let path = match include {
        Some(p) => split_path(p)?,
        None => Vec::new(),
    };
    if path.is_empty() {
        let tree = repo.load_tree(root)?;
        r.tree(&tree, &mut Vec::new())?;
    } else {
        let entry = lookup(repo, root, &path)?;
        let mut rel = Vec::new();
        for c in &path[..path.len() - 1] {
            rel.push(c.clone());
            r.make_dir(&rel)?;
        }
        r.entry(&entry, &mut rel)?;
    }
    Ok(r.stats)
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
    let mut r = Restorer {
        repo,
        progress,
        target: parent.to_path_buf(),
        restored: HashSet::new(),
        prefix: vec![entry.name.clone()],
        stats: RestoreStats::default(),
    };
    match &entry.node {
        Node::Dir(id) => {
            fs::create_dir(dest).map_err(|e| Error::io(dest, e))?;
            r.target = dest.to_path_buf();
            let tree = repo.load_tree(id)?;
            r.tree(&tree, &mut Vec::new())?;
            r.stats.dirs += 1;
            r.finish_meta(dest, entry, false)?;
        }
        _ => {
            r.prefix.clear();
            let mut e = entry.clone();
            e.name = name.as_bytes().to_vec();
            r.entry(&e, &mut Vec::new())?;
        }
    }
    Ok(r.stats)
}

struct Restorer<'a> {
    repo: &'a Repo,
    progress: &'a dyn Progress,
    target: PathBuf,
    /// Snapshot paths of the files written, for hard links.
    restored: HashSet<Vec<Vec<u8>>>,
    /// The snapshot path that `target` stands for (empty: the root).
    prefix: Vec<Vec<u8>>,
    stats: RestoreStats,
}

impl Restorer<'_> {
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

    fn tree(&mut self, tree: &Tree, rel: &mut Vec<Vec<u8>>) -> Result<()> {
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
        for e in &tree.entries {
            self.entry(e, rel)?;
        }
        Ok(())
    }

    fn entry(&mut self, e: &Entry, rel: &mut Vec<Vec<u8>>) -> Result<()> {
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

    fn entry_at(&mut self, e: &Entry, rel: &mut Vec<Vec<u8>>) -> Result<()> {
        let p = self.path(rel);
        match &e.node {
            Node::Dir(id) => {
                self.make_dir(rel)?;
                let tree = self.repo.load_tree(id)?;
                self.tree(&tree, rel)?;
                self.stats.dirs += 1;
                self.finish_meta(&p, e, false)?;
            }
            Node::File(parts) => {
                self.clear(&p)?;
                let name = p.file_name().expect("has a name").as_bytes();
                let mut tmp_name = b".cairn-restore-".to_vec();
                tmp_name
                    .extend_from_slice(&crate::crypto::random_array::<4>().map(|b| b'a' + b % 26));
                tmp_name.push(b'-');
                tmp_name.extend_from_slice(&name[..name.len().min(200)]);
                let tmp = p.with_file_name(OsStr::from_bytes(&tmp_name));
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&tmp)
                    .map_err(|err| Error::io(&p, err))?;
                let what = display(rel);
                let written = write_parts(self.repo, parts, &mut f, &what, self.progress);
                let written = match written
                    .and_then(|n| f.sync_data().map(|_| n).map_err(|err| Error::io(&p, err)))
                {
                    Ok(n) => n,
                    Err(err) => {
                        let _ = fs::remove_file(&tmp);
                        if let Error::Corrupt { .. } = err {
                            // Damaged data fails this file only; the rest of the tree is restored.
                            let msg = err.to_string();
                            self.progress.warn(&msg);
                            self.stats.failed.push(msg);
                            return Ok(());
                        }
                        return Err(err);
                    }
                };
                drop(f);
                fs::rename(&tmp, &p).map_err(|err| Error::io(&p, err))?;
                self.stats.files += 1;
                self.stats.bytes += written;
                self.restored
                    .insert([self.prefix.as_slice(), rel.as_slice()].concat());
                self.finish_meta(&p, e, false)?;
            }
            Node::Symlink(target) => {
                self.clear(&p)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)
                    .map_err(|err| Error::io(&p, err))?;
                self.finish_meta(&p, e, true)?;
            }
            Node::HardLink(to) => {
                if to.iter().any(|c| !valid_component(c)) || to.is_empty() {
                    return Err(Error::Hostile {
                        path: display(rel),
                        why: "hard link target is not a path inside the snapshot".into(),
                    });
                }
                if !self.restored.contains(to) {
                    // Its file is outside what this restore writes (--include), or damaged.
                    let msg = format!(
                        "{}: hard link to {}, which this restore did not write; skipped",
                        display(rel),
                        display(to)
                    );
                    self.progress.warn(&msg);
                    self.stats.skipped.push(msg);
                    return Ok(());
                }
                self.clear(&p)?;
                let inside = &to[self.prefix.len()..];
                fs::hard_link(self.path(inside), &p).map_err(|err| Error::io(&p, err))?;
            }
            Node::CharDevice(_) | Node::BlockDevice(_) => {
                let msg = format!(
                    "{}: device node not restored (refused for safety)",
                    display(rel)
                );
                self.progress.warn(&msg);
                self.stats.skipped.push(msg);
            }
            Node::Fifo => {
                self.clear(&p)?;
                fsmeta::mkfifo(&p, e.mode).map_err(|err| Error::io(&p, err))?;
                self.finish_meta(&p, e, false)?;
            }
        }
        Ok(())
    }

    /// Removes a non-directory entry in the way (never follows it).
    fn clear(&self, p: &Path) -> Result<()> {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| Error::io(p, e)),
            Ok(_) => fs::remove_file(p).map_err(|e| Error::io(p, e)),
            Err(_) => Ok(()),
        }
    }

    fn finish_meta(&mut self, p: &Path, e: &Entry, symlink: bool) -> Result<()> {
        for (k, v) in &e.xattrs {
            if let Err(err) = fsmeta::set_xattr(p, k, v) {
                let msg = format!(
                    "{}: xattr {}: {err}",
                    p.display(),
                    String::from_utf8_lossy(k)
                );
                self.progress.warn(&msg);
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
}
