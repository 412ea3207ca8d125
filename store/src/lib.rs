//! Cairn's store: an encrypted, deduplicating, content-addressed repository of snapshots.
//!
//! ```text
//!  backup paths / stream
//!        │  archiver: keyed FastCDC → keyed BLAKE3 id → dedup against the index
//!        ▼
//!  new chunks ── zstd ── AES-256-GCM (per-pack key, counter nonce) ──▶ packs/xx/<id>
//!        │                                                                 │ tables
//!  trees (one blob per directory) ──▶ snapshot file (sealed JSON) ─▶ snapshots/<id>
//!        │                                                                 ▼
//!        └──────────── index/ (RocksDB: blob → pack location, label → snapshots)
//! ```
//!
//! The vocabulary: a *chunk* is a content-defined piece of a file; a *blob* is a sealed chunk
//! or tree inside a *pack*; a *tree* is one directory; a *snapshot* names a root tree and
//! carries labels (`service@revision`, tags). The byte-level format is in `format-spec/`.
//!
//! Lower layers never import higher ones: `backend` knows nothing of packs, `pack` nothing of
//! snapshots. Without the default `rocksdb` feature the crate is only the codecs and the
//! chunker, which is what the fuzz targets build against.
#![deny(missing_docs)]

pub mod backend;
pub mod blob;
pub mod chunker;
pub mod codec;
pub mod command;
pub mod config;
pub mod crypto;
pub mod delta;
pub mod envelope;
pub mod error;
pub mod events;
pub mod forget;
pub mod id;
pub mod keyfile;
pub mod pack;
pub mod servicefile;
pub mod snapshot;
pub mod tree;

#[cfg(feature = "rocksdb")]
pub mod archiver;
#[cfg(feature = "rocksdb")]
pub mod check;

pub mod fsmeta;
#[cfg(feature = "rocksdb")]
pub mod index;
#[cfg(feature = "rocksdb")]
pub mod lock;
#[cfg(feature = "rocksdb")]
pub mod prune;
#[cfg(feature = "rocksdb")]
pub mod repair;
#[cfg(feature = "rocksdb")]
pub mod repo;
#[cfg(feature = "rocksdb")]
pub mod restorer;
#[cfg(feature = "rocksdb")]
pub mod service;
#[cfg(feature = "rocksdb")]
pub mod usage;

pub use error::{Error, Result};
pub use id::{BlobId, PackId, SnapshotId};

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Bytes as people read them: "12.3 MiB".
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
