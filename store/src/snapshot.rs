//! Snapshot files: one sealed JSON document per snapshot. Spec: `format-spec/07-snapshots.md`.

use serde::{Deserialize, Serialize};

use crate::crypto::Keys;
use crate::envelope::{self, Magic};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};

/// Snapshot document version.
pub const SNAPSHOT_VERSION: u32 = 1;
/// Largest snapshot file accepted.
pub const MAX_SNAPSHOT_FILE: usize = 16 * 1024 * 1024;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a backup did, recorded with the snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Regular files (including streams) in the snapshot.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Other entries (symlinks, hard links, devices, fifos).
    pub others: u64,
    /// Logical bytes of file data.
    pub bytes: u64,
    /// Blobs this backup added to the repository.
    pub new_blobs: u64,
    /// Plaintext bytes of those blobs.
    pub new_raw_bytes: u64,
    /// Bytes those blobs take in packs (compressed and sealed): what this snapshot cost.
    pub added_bytes: u64,
    /// Entries that could not be read and were left out (each was reported).
    pub skipped: u64,
    /// Files found unchanged against the parent snapshot (same size, times and inode) and
    /// not read again. Omitted from the document when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged_files: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// A snapshot document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Document version.
    pub version: u32,
    /// Creation time, nanoseconds since the epoch (UTC).
    pub time_ns: i64,
    /// Host that took it.
    pub hostname: String,
    /// User that took it.
    pub username: String,
    /// What was backed up, as given (for display).
    pub paths: Vec<String>,
    /// Root tree.
    pub tree: BlobId,
    /// Service label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Revision label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot this one was compared against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    /// What the backup did.
    pub summary: Summary,
}

impl Snapshot {
    /// The sealed file and its id (the BLAKE3 hash of the file's bytes).
    pub fn seal(&self, keys: &Keys) -> (SnapshotId, Vec<u8>) {
        let json = serde_json::to_vec(self).expect("a snapshot always serialises");
        let bytes = envelope::seal_file(keys, Magic::Snapshot, &json);
        (SnapshotId(*blake3::hash(&bytes).as_bytes()), bytes)
    }

    /// Opens a sealed snapshot file; checks it is the file `id` names.
    pub fn open(keys: &Keys, id: &SnapshotId, bytes: &[u8]) -> Result<Self> {
        let what = format!("snapshot {}", id.short());
        if bytes.len() > MAX_SNAPSHOT_FILE {
            return Err(Error::corrupt(&what, "larger than any snapshot file"));
        }
        if blake3::hash(bytes).as_bytes() != &id.0 {
            return Err(Error::corrupt(&what, "contents do not match the file name"));
        }
        let json = envelope::open_file(keys, Magic::Snapshot, bytes, &what)?;
        let snap: Snapshot = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt(&what, format!("document: {e}")))?;
        if snap.version > SNAPSHOT_VERSION {
            return Err(Error::NewerFormat {
                what,
                found: snap.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        Ok(snap)
    }

    /// `service@revision`, when both are set.
    pub fn label(&self) -> Option<String> {
        match (&self.service, &self.revision) {
            (Some(s), Some(r)) => Some(format!("{s}@{r}")),
            _ => None,
        }
    }
}
