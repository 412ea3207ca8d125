//! A repository in a local directory.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Backend;
use crate::error::{Error, Result};

/// Files under a root directory. Directories are created 0700 and files 0600.
pub struct LocalBackend {
    root: PathBuf,
    /// Packs opened lately, for reads of their blobs.
    open: Mutex<OpenPacks>,
}

/// How many pack files are kept open. A restore of many small files reads a few blobs from
/// each pack in turn; opening the pack for every read was half its `openat` calls.
const OPEN_PACKS: usize = 64;

/// Open pack files with their sizes, oldest opened first. A pack never changes once
/// written (its name is its contents' id), so a descriptor stays right until the file is
/// removed, which drops it here too.
#[derive(Default)]
struct OpenPacks {
    files: HashMap<String, (Arc<File>, u64)>,
    order: VecDeque<String>,
}

impl LocalBackend {
    /// A backend rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            open: Mutex::new(OpenPacks::default()),
        }
    }

    /// The open file `name` and its size; packs come from (and go into) the open set.
    fn open_for_read(&self, name: &str) -> Result<(Arc<File>, u64)> {
        let cache = name.starts_with("packs/");
        if cache && let Some(f) = self.open_packs().files.get(name) {
            return Ok(f.clone());
        }
        let p = self.path(name);
        let f = File::open(&p).map_err(|e| missing_or_io(&p, e))?;
        let size = f.metadata().map_err(|e| Error::io(&p, e))?.len();
        let f = (Arc::new(f), size);
        if cache {
            let mut open = self.open_packs();
            if open.files.insert(name.to_string(), f.clone()).is_none() {
                open.order.push_back(name.to_string());
            }
            while open.order.len() > OPEN_PACKS {
                let old = open.order.pop_front().expect("not empty");
                open.files.remove(&old);
            }
        }
        Ok(f)
    }

    fn open_packs(&self) -> std::sync::MutexGuard<'_, OpenPacks> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_open(&self, name: &str) {
        let mut open = self.open_packs();
        if open.files.remove(name).is_some() {
            open.order.retain(|n| n != name);
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn mkdirs(&self, dir: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(dir, e))
    }
}

/// A missing file as [`Error::NotFound`] (callers tell "gone meanwhile" from "unreadable").
fn missing_or_io(p: &Path, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::NotFound(format!("{} is missing", p.display()))
    } else {
        Error::io(p, e)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl Backend for LocalBackend {
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.path(name);
        fs::read(&p).map_err(|e| missing_or_io(&p, e))
    }

    fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let p = self.path(name);
        let (f, size) = self.open_for_read(name)?;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                name,
                format!("truncated: {len} bytes at offset {offset} asked, the file has {size}"),
            ));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                // Shorter now than when it was opened.
                Error::corrupt(name, format!("truncated below offset {}", offset + len))
            } else {
                Error::io(&p, e)
            }
        })?;
        Ok(buf)
    }

    fn size(&self, name: &str) -> Result<u64> {
        let p = self.path(name);
        Ok(fs::metadata(&p).map_err(|e| missing_or_io(&p, e))?.len())
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        self.forget_open(name);
        let p = self.path(name);
        let dir = p.parent().expect("names have a parent").to_path_buf();
        self.mkdirs(&dir)?;
        // The writer's PID is in the name, so a later writer can tell a dead one's leftovers.
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            hex::encode(crate::crypto::random_array::<8>())
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| Error::io(&tmp, e))?;
            f.write_all(data).map_err(|e| Error::io(&p, e))?;
            f.sync_all().map_err(|e| Error::io(&p, e))?;
            fs::rename(&tmp, &p).map_err(|e| Error::io(&p, e))?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let p = self.path(&d);
            let rd = match fs::read_dir(&p) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&p, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(&p, e))?;
                let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with(".tmp-") {
                    continue;
                }
                let ft = ent.file_type().map_err(|e| Error::io(ent.path(), e))?;
                let full = format!("{d}/{name}");
                if ft.is_dir() {
                    stack.push(full);
                } else if ft.is_file() {
                    out.push(full);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.forget_open(name);
        let p = self.path(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    fn clean_temporaries(&self) -> Result<u64> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&d, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(&d, e))?;
                let ft = ent.file_type().map_err(|e| Error::io(ent.path(), e))?;
                let name = ent.file_name();
                let name = name.to_string_lossy();
                if ft.is_dir() && name != "index" {
                    stack.push(ent.path());
                } else if let Some(rest) = name.strip_prefix(".tmp-") {
                    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                    if pid.is_none_or(|p| !crate::fsmeta::pid_alive(p)) {
                        fs::remove_file(ent.path()).map_err(|e| Error::io(ent.path(), e))?;
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let p = self.path(name);
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}
