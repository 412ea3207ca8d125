//! The 48-byte plaintext header every sealed object starts with, and sealed single-payload
//! files (config, snapshot, lock). Spec: `format-spec/04-sealed-objects.md`.
//!
//! ```text
//! magic [8] | format version u16 | flags u16 (0) | key generation u32 | salt [32]
//! ```
//! The header is the associated data of everything sealed in the object, so a changed magic,
//! version or salt fails authentication.

use crate::codec::{Put, Reader};
use crate::crypto::{Keys, SALT_LEN, random_array};
use crate::error::{Error, Result};

/// Length of the plaintext header.
pub const HEADER_LEN: usize = 48;
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// What kind of object a file is, by its magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// `config`
    Config,
    /// `snapshots/<id>`
    Snapshot,
    /// `packs/<xx>/<id>`
    Pack,
    /// `locks/<name>`
    Lock,
    /// `events/<name>`
    Event,
    /// `prune/<name>`: packs a prune will delete
    Prune,
}

impl Magic {
    /// The 8 bytes on disk.
    pub fn bytes(self) -> &'static [u8; 8] {
        match self {
            Magic::Config => b"CAIRNCFG",
            Magic::Snapshot => b"CAIRNSNP",
            Magic::Pack => b"CAIRNPAK",
            Magic::Lock => b"CAIRNLCK",
            Magic::Event => b"CAIRNEVT",
            Magic::Prune => b"CAIRNPRN",
        }
    }
}

/// A decoded header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Object kind.
    pub magic: Magic,
    /// Format version.
    pub version: u16,
    /// Key generation the object is sealed under (0 until the first `key rotate`).
    pub key_gen: u32,
    /// Random per-object salt.
    pub salt: [u8; SALT_LEN],
}

impl Header {
    /// A header with a fresh random salt, for an object sealed under `keys`' newest
    /// generation.
    pub fn new(magic: Magic, keys: &Keys) -> Self {
        Self {
            magic,
            version: FORMAT_VERSION,
            key_gen: keys.current_generation(),
            salt: random_array(),
        }
    }

    /// The 48 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut v = Vec::with_capacity(HEADER_LEN);
        v.extend_from_slice(self.magic.bytes());
        v.put_u16(self.version);
        v.put_u16(0);
        v.put_u32(self.key_gen);
        v.extend_from_slice(&self.salt);
        v.try_into().expect("48 bytes")
    }

    /// Decodes and checks a header of the expected kind.
    pub fn decode(buf: &[u8], magic: Magic, what: &str) -> Result<Self> {
        let mut r = Reader::new(buf, what);
        let m: [u8; 8] = r.array()?;
        if &m != magic.bytes() {
            return Err(Error::corrupt(
                what,
                format!("not a {magic:?} object (bad magic)"),
            ));
        }
        let version = r.u16()?;
        if version > FORMAT_VERSION {
            return Err(Error::NewerFormat {
                what: what.to_string(),
                found: version.into(),
                supported: FORMAT_VERSION.into(),
            });
        }
        if version == 0 {
            return Err(Error::corrupt(what, "format version 0"));
        }
        let _flags = r.u16()?;
        // Which generations exist is the key file's business (see `Keys::header_key`).
        let key_gen = r.u32()?;
        let salt = r.array()?;
        Ok(Self {
            magic,
            version,
            key_gen,
            salt,
        })
    }
}

/// Seals `plaintext` as a whole file of kind `magic` (nonce 0, header as associated data).
pub fn seal_file(keys: &Keys, magic: Magic, plaintext: &[u8]) -> Vec<u8> {
    let header = Header::new(magic, keys);
    seal_file_with(keys, &header, plaintext)
}

/// [`seal_file`] with a given header (test vectors fix the salt).
pub fn seal_file_with(keys: &Keys, header: &Header, plaintext: &[u8]) -> Vec<u8> {
    let h = header.encode();
    let mut out = h.to_vec();
    let key = keys
        .header_key(header, "a new file")
        .expect("a header made for these keys names one of their generations");
    out.extend_from_slice(&key.seal(0, &h, plaintext));
    out
}

/// Opens a file written by [`seal_file`]; `what` names it in errors.
pub fn open_file(keys: &Keys, magic: Magic, bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    if bytes.len() < HEADER_LEN + crate::crypto::TAG_LEN {
        return Err(Error::corrupt(
            what,
            format!("truncated ({} bytes)", bytes.len()),
        ));
    }
    let header = Header::decode(&bytes[..HEADER_LEN], magic, what)?;
    keys.header_key(&header, what)?
        .open(0, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
        .ok_or_else(|| {
            Error::corrupt(
                what,
                "authentication failed (modified, truncated or sealed under another key)",
            )
        })
}
