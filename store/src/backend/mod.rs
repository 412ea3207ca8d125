//! Where repository files live. The store names files by paths relative to the repository
//! root (`config`, `keys/<id>`, `packs/<xx>/<id>`, `snapshots/<id>`, `locks/<id>`) and asks a
//! backend to read, write, list and remove them. A backend knows nothing of what files hold.

mod local;

pub use local::LocalBackend;

use crate::error::Result;

/// File storage for a repository.
///
/// `write` must be atomic and durable: once it returns, the whole file is there under its
/// name and survives a crash; if it fails or the process dies, no file of that name appears.
pub trait Backend: Send + Sync {
    /// A whole file.
    fn read(&self, name: &str) -> Result<Vec<u8>>;
    /// `len` bytes from `offset`; fewer bytes than asked is an error.
    fn read_at(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// A file's size in bytes.
    fn size(&self, name: &str) -> Result<u64>;
    /// Creates (or replaces) a file atomically and durably.
    fn write(&self, name: &str, data: &[u8]) -> Result<()>;
    /// Every file below `dir`, by name relative to the repository root, sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>>;
    /// Deletes a file; a file that is already gone is not an error.
    fn remove(&self, name: &str) -> Result<()>;
    /// Whether a file exists.
    fn exists(&self, name: &str) -> Result<bool>;
    /// Removes what writers killed mid-write left behind (never a live writer's file);
    /// returns how many were removed.
    fn clean_temporaries(&self) -> Result<u64> {
        Ok(0)
    }
}
