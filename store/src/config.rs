//! The repository config: sealed JSON. Spec: `format-spec/04-sealed-objects.md`.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{Keys, random_array};
use crate::envelope::{self, Magic};
use crate::error::{Error, Result};

/// Largest config file accepted.
pub const MAX_CONFIG_FILE: u64 = 64 * 1024;
/// Config document version: 2 may name delta runs (`delta`); version 1 is still read.
pub const CONFIG_VERSION: u32 = 2;

/// Argon2id parameters for new key files.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 4 lanes: the second of RFC 9106's recommended settings. The lanes
    /// are filled on every core: on 2 cores `cairn snapshots`, which does little else, took
    /// 0.11 s instead of 0.18 s with 1 lane, for the same memory and passes.
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 4,
        }
    }
}

/// The repository's settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Config {
    /// Document version.
    pub version: u32,
    /// Random repository id (hex).
    pub id: String,
    /// Chunking of files found in directory trees.
    pub chunker_tree: ChunkerParams,
    /// Chunking of streams (`--stdin`, `--command`, service dumps).
    pub chunker_stream: ChunkerParams,
    /// zstd level for new blobs (0 stores uncompressed).
    pub zstd_level: i32,
    /// A pack is closed once it holds this many bytes.
    pub pack_size: u32,
    /// Argon2id parameters for new key files.
    pub kdf: KdfParams,
    /// Delta runs for new versions of large files (config version 2; absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaParams>,
}

/// How new versions of large files are stored as delta runs (see `delta.rs`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeltaParams {
    /// Longest chain: a run is never more than this many levels deep; a run that would be
    /// is stored as plain chunks instead (a re-base), so restoring any byte decodes at most
    /// this many runs.
    pub chain_max: u8,
    /// zstd level of the runs.
    pub level: i32,
    /// Longest run in bytes.
    pub run_max: u32,
    /// Bytes of the previous version taken on each side of the predicted stretch.
    pub slack: u32,
    /// Files and streams shorter than this are not delta-coded.
    pub min_file: u64,
}

impl Default for DeltaParams {
    fn default() -> Self {
        Self {
            chain_max: 8,
            level: 3,
            // 4 MiB: a backup finishes two runs at once while gathering a third, each held
            // with its prefix (a little longer than the run), the chunks that prefix is read
            // from and an anchor table. Against 8 MiB on the corpus dump (five revisions,
            // same key): peak memory of a delta backup 130–148 → 114–124 MB (with the
            // smaller caches of `repo.rs`, 88–100), the same time, 1.6% more stored. 2 MiB
            // stored 7% more.
            run_max: 4 << 20,
            slack: 256 << 10,
            min_file: 1 << 20,
        }
    }
}

impl Config {
    /// Defaults for a new repository.
    pub fn new(kdf: KdfParams) -> Self {
        Self {
            version: CONFIG_VERSION,
            id: hex::encode(random_array::<16>()),
            chunker_tree: ChunkerParams::TREE,
            chunker_stream: ChunkerParams::STREAM_DELTA,
            zstd_level: 3,
            pack_size: 16 * 1024 * 1024,
            kdf,
            delta: Some(DeltaParams::default()),
        }
    }

    /// The sealed file.
    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        envelope::seal_file(
            keys,
            Magic::Config,
            &serde_json::to_vec(self).expect("serialises"),
        )
    }

    /// Opens the sealed file and checks its values.
    pub fn open(keys: &Keys, bytes: &[u8]) -> Result<Self> {
        let json = envelope::open_file(keys, Magic::Config, bytes, "config")?;
        let c: Config = serde_json::from_slice(&json)
            .map_err(|e| Error::corrupt("config", format!("document: {e}")))?;
        if c.version > CONFIG_VERSION {
            return Err(Error::NewerFormat {
                what: "config".into(),
                found: c.version,
                supported: CONFIG_VERSION,
            });
        }
        crate::keyfile::check_bounds(c.kdf).map_err(|why| Error::corrupt("config", why))?;
        c.chunker_tree.validate()?;
        c.chunker_stream.validate()?;
        if let Some(d) = c.delta
            && (d.chain_max == 0
                || !(1..=22).contains(&d.level)
                || d.run_max == 0
                || d.run_max > crate::delta::MAX_RUN
                || d.slack > crate::delta::MAX_PREFIX / 4)
        {
            return Err(Error::corrupt("config", "delta values out of range"));
        }
        if !(0..=22).contains(&c.zstd_level)
            || c.pack_size < 1024 * 1024
            || c.pack_size > 512 * 1024 * 1024
        {
            return Err(Error::corrupt("config", "values out of range"));
        }
        Ok(c)
    }
}
