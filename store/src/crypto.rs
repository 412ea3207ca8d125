//! Keys and sealing. Spec: `format-spec/02-crypto.md`.
//!
//! One random 32-byte master key per repository. Every other key is derived from it with
//! BLAKE3's `derive_key` under a fixed context string, so the purposes can never share a key:
//!
//! ```text
//! master ─┬─ "cairn 2026 chunk id"   → keyed BLAKE3 of chunk plaintext   (BlobId of data)
//!         ├─ "cairn 2026 tree id"    → keyed BLAKE3 of tree plaintext    (BlobId of trees)
//!         ├─ "cairn 2026 run id"     → keyed BLAKE3 of a delta run's bytes (BlobId of runs)
//!         ├─ "cairn 2026 gear"       → XOF → the chunker's 256-entry gear table
//!         ├─ "cairn 2026 label"      → keyed hashes used as index keys (service, revision)
//!         └─ "cairn 2026 seal"       → with a random 32-byte salt per file → AES-256-GCM key
//!                                        (key generation 0)
//! gen key g ── "cairn 2026 seal"       → the same, for objects sealed under generation g ≥ 1
//! ```
//!
//! `key rotate` draws a random *generation key* for generation g+1; key files wrap the master
//! key and every generation key. New objects are sealed under the newest generation and say
//! so in their header, so objects of every generation stay readable. Ids, cut points and
//! label hashes stay derived from the master key, so new data still deduplicates against
//! old data.
//!
//! Every sealed object (pack, snapshot, config, lock) carries its own random salt, so each has
//! its own AES key and a plain counter is a safe nonce inside it: no random 96-bit nonce is ever
//! drawn under a long-lived key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of an AES-GCM tag, appended to every sealed payload.
pub const TAG_LEN: usize = 16;
/// Length of the random salt in every sealed object's header.
pub const SALT_LEN: usize = 32;

/// The repository's master key. Wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        Self(random_array())
    }
    /// The key from its 32 bytes (as unwrapped from a key file).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The raw bytes, for wrapping into a key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// All keys derived from one master key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Keys {
    chunk_id: [u8; 32],
    tree_id: [u8; 32],
    run_id: [u8; 32],
    label: [u8; 32],
    /// Seal keys by generation, oldest first: generation 0 from the master key, then one
    /// per generation key.
    seal: Vec<[u8; 32]>,
    gear_seed: [u8; 32],
}

impl Keys {
    /// Derives every purpose key from `master`.
    pub fn derive(master: &MasterKey) -> Self {
        Self {
            chunk_id: blake3::derive_key("cairn 2026 chunk id", &master.0),
            tree_id: blake3::derive_key("cairn 2026 tree id", &master.0),
            run_id: blake3::derive_key("cairn 2026 run id", &master.0),
            label: blake3::derive_key("cairn 2026 label", &master.0),
            seal: vec![blake3::derive_key("cairn 2026 seal", &master.0)],
            gear_seed: blake3::derive_key("cairn 2026 gear", &master.0),
        }
    }

    /// Derives every purpose key from `master`, and the seal keys of generations 1, 2, ...
    /// from `generations` (in that order).
    pub fn derive_with(master: &MasterKey, generations: &[MasterKey]) -> Self {
        let mut k = Self::derive(master);
        for g in generations {
            k.seal.push(blake3::derive_key("cairn 2026 seal", &g.0));
        }
        k
    }

    /// The generation new objects are sealed under: the newest.
    pub fn current_generation(&self) -> u32 {
        (self.seal.len() - 1) as u32
    }

    /// The id of a chunk of file or stream data.
    pub fn chunk_id(&self, data: &[u8]) -> crate::BlobId {
        crate::BlobId(*blake3::keyed_hash(&self.chunk_id, data).as_bytes())
    }

    /// The id of an encoded tree.
    pub fn tree_id(&self, data: &[u8]) -> crate::BlobId {
        crate::BlobId(*blake3::keyed_hash(&self.tree_id, data).as_bytes())
    }

    /// The id of a delta run, from its (decoded) bytes: distinct from the id of a chunk with
    /// the same bytes, since a run of one chunk is both.
    pub fn run_id(&self, data: &[u8]) -> crate::BlobId {
        crate::BlobId(*blake3::keyed_hash(&self.run_id, data).as_bytes())
    }

    /// The id of a blob of `kind` holding (decoded) `data`.
    pub fn blob_id(&self, kind: crate::blob::BlobKind, data: &[u8]) -> crate::BlobId {
        match kind {
            crate::blob::BlobKind::Data => self.chunk_id(data),
            crate::blob::BlobKind::Tree => self.tree_id(data),
            crate::blob::BlobKind::DeltaRun => self.run_id(data),
        }
    }

    /// A keyed hash of a label (service name, revision) for use as an index key: the index
    /// can group snapshots by label without the label appearing on disk.
    pub fn label_hash(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = blake3::Hasher::new_keyed(&self.label);
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    /// The chunker's gear table: 256 pseudo-random words from the key.
    pub fn gear_table(&self) -> [u64; 256] {
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_keyed(&self.gear_seed)
            .finalize_xof()
            .fill(&mut bytes);
        let mut table = [0u64; 256];
        for (i, w) in bytes.chunks_exact(8).enumerate() {
            table[i] = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        }
        table
    }

    /// The AES-256-GCM key of one sealed object of generation 0, from its salt.
    pub fn object_key(&self, salt: &[u8; SALT_LEN]) -> ObjectKey {
        ObjectKey(*blake3::keyed_hash(&self.seal[0], salt).as_bytes())
    }

    /// The AES-256-GCM key of the object whose header this is (its generation and salt).
    /// `what` names the object in errors.
    pub fn header_key(
        &self,
        header: &crate::envelope::Header,
        what: &str,
    ) -> crate::Result<ObjectKey> {
        let seal = self.seal.get(header.key_gen as usize).ok_or_else(|| {
            crate::Error::Invalid(format!(
                "{what} is sealed under key generation {}, which the key file that opened \
                 the repository does not hold (it holds 0..={}); after an interrupted \
                 `key rotate` an older key file for the same password may remain: remove it \
                 with `cairn key remove` (or the header is damaged)",
                header.key_gen,
                self.current_generation()
            ))
        })?;
        Ok(ObjectKey(
            *blake3::keyed_hash(seal, &header.salt).as_bytes(),
        ))
    }
}

/// The AES-256-GCM key of one sealed object (pack, snapshot, config...).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ObjectKey([u8; 32]);

impl ObjectKey {
    /// Wraps a raw key (key files derive theirs from the password instead of the master key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0).expect("32-byte key")
    }

    /// Encrypts `plaintext` under nonce number `counter`; returns ciphertext ‖ tag.
    pub fn seal(&self, counter: u64, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.cipher()
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail")
    }

    /// Decrypts and authenticates; `None` when the tag does not verify.
    pub fn open(&self, counter: u64, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < TAG_LEN {
            return None;
        }
        self.cipher()
            .decrypt(&nonce(counter), Payload { msg: sealed, aad })
            .ok()
    }
}

fn nonce(counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(n)
}

/// `N` bytes from the operating system's random source.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}
