//! Pack files: immutable containers of sealed blobs with a sealed table of contents.
//! Spec: `format-spec/05-packs.md`.
//!
//! ```text
//! envelope header (48, magic CAIRNPAK, salt → pack key)
//! blob 0 sealed | blob 1 sealed | ...            nonce = slot number
//! table of contents, sealed                       nonce = u64::MAX, AAD = envelope header
//! length of the sealed table u32
//! ```
//! The table lists every blob (kind, stored length, raw length, offset, id), so the index can
//! always be rebuilt from packs alone. A pack is named by the BLAKE3 hash of its bytes.

use crate::blob::{self, BlobKind, MAX_BLOB_LEN};
use crate::codec::{Put, Reader};
use crate::crypto::{Keys, ObjectKey, TAG_LEN};
use crate::envelope::{HEADER_LEN, Header, Magic};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};

/// Bytes of one table entry.
pub const ENTRY_LEN: usize = 52;
/// Nonce counter of the table.
const TOC_NONCE: u64 = u64::MAX;
/// The most blobs a pack may list (a 16 MiB pack of 64-byte blobs, with room to spare).
pub const MAX_ENTRIES: usize = 1 << 20;

/// One blob as listed in a pack's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The blob's id.
    pub id: BlobId,
    /// Its kind.
    pub kind: BlobKind,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u64,
    /// Length of the sealed blob (ciphertext and tag).
    pub stored_len: u32,
    /// Length of the plaintext data.
    pub raw_len: u32,
}

impl Entry {
    /// The blob's slot number, which is its nonce.
    pub fn slot(index: usize) -> u32 {
        index as u32
    }
}

/// Builds one pack in memory.
pub struct PackBuilder {
    header: Header,
    key: ObjectKey,
    buf: Vec<u8>,
    entries: Vec<Entry>,
}

impl PackBuilder {
    /// An empty pack with a fresh salt.
    pub fn new(keys: &Keys) -> Self {
        Self::with_header(keys, Header::new(Magic::Pack, keys))
    }

    /// An empty pack with room for `bytes` (a pack that grew by doubling copied itself over
    /// and over, and held twice its size when it went a blob past the size it closes at).
    pub fn sized(keys: &Keys, bytes: usize) -> Self {
        let mut b = Self::new(keys);
        b.buf.reserve_exact(bytes.saturating_sub(b.buf.len()));
        b
    }

    /// An empty pack with a given header (test vectors fix the salt).
    pub fn with_header(keys: &Keys, header: Header) -> Self {
        let key = keys
            .header_key(&header, "a new pack")
            .expect("a pack header made for these keys names one of their generations");
        let buf = header.encode().to_vec();
        Self {
            header,
            key,
            buf,
            entries: Vec::new(),
        }
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True before the first blob.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Blobs so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Seals and appends a blob whose plaintext ([`blob::encode`]d) is `encoded` and whose
    /// data is `raw_len` bytes long.
    pub fn add(&mut self, id: BlobId, kind: BlobKind, raw_len: u32, encoded: &[u8]) {
        let sealed = blob::seal(&self.key, self.next_slot(), &id, kind, encoded);
        self.push_sealed(id, kind, raw_len, &sealed);
    }

    /// The slot (nonce) the next blob gets.
    pub fn next_slot(&self) -> u32 {
        Entry::slot(self.entries.len())
    }

    /// The key blobs of this pack are sealed with.
    pub fn key(&self) -> &ObjectKey {
        &self.key
    }

    /// Appends a blob already sealed with [`Self::key`] under slot [`Self::next_slot`] (so
    /// several blobs can be sealed in parallel, then appended in slot order).
    pub fn push_sealed(&mut self, id: BlobId, kind: BlobKind, raw_len: u32, sealed: &[u8]) {
        self.entries.push(Entry {
            id,
            kind,
            offset: self.buf.len() as u64,
            stored_len: sealed.len() as u32,
            raw_len,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Appends the sealed table and trailer; returns the pack's id, bytes and table.
    pub fn finish(mut self) -> (PackId, Vec<u8>, Vec<Entry>) {
        let toc = encode_toc(&self.entries);
        let sealed = self.key.seal(TOC_NONCE, &self.header.encode(), &toc);
        self.buf.extend_from_slice(&sealed);
        self.buf.put_u32(sealed.len() as u32);
        let id = PackId(*blake3::hash(&self.buf).as_bytes());
        (id, self.buf, self.entries)
    }
}

fn encode_toc(entries: &[Entry]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    v.put_u32(entries.len() as u32);
    for e in entries {
        v.push(e.kind as u8);
        v.push(0);
        v.put_u16(0);
        v.put_u32(e.stored_len);
        v.put_u32(e.raw_len);
        v.put_u64(e.offset);
        v.extend_from_slice(&e.id.0);
    }
    v
}

/// Where a pack's sealed table lies, from the pack's total size and its last four bytes.
pub fn toc_range(pack_size: u64, trailer: [u8; 4], what: &str) -> Result<(u64, u32)> {
    let len = u32::from_le_bytes(trailer);
    let min = (HEADER_LEN + 4) as u64;
    if pack_size < min + TAG_LEN as u64 + 4 {
        return Err(Error::corrupt(
            what,
            format!("truncated pack ({pack_size} bytes)"),
        ));
    }
    if (len as u64) < (TAG_LEN + 4) as u64 || len as u64 > pack_size - min {
        return Err(Error::corrupt(
            what,
            format!("table length {len} does not fit a pack of {pack_size} bytes"),
        ));
    }
    Ok((pack_size - 4 - len as u64, len))
}

/// Decodes a pack's table, given the pack's first 48 bytes, the sealed table at `toc_offset`.
pub fn open_toc(
    keys: &Keys,
    head: &[u8],
    sealed_toc: &[u8],
    toc_offset: u64,
    what: &str,
) -> Result<Vec<Entry>> {
    let header = Header::decode(head, Magic::Pack, what)?;
    let key = keys.header_key(&header, what)?;
    let toc = key
        .open(TOC_NONCE, &head[..HEADER_LEN], sealed_toc)
        .ok_or_else(|| Error::corrupt(what, "pack table failed authentication"))?;
    decode_toc(&toc, toc_offset, what)
}

/// Decodes a table's plaintext and checks each entry lies inside the blob area
/// `[48, toc_offset)` without overlap.
pub fn decode_toc(toc: &[u8], toc_offset: u64, what: &str) -> Result<Vec<Entry>> {
    let mut r = Reader::new(toc, what);
    let n = r.count(ENTRY_LEN)?;
    if n > MAX_ENTRIES {
        return Err(r.err(format!("{n} entries exceed the limit")));
    }
    let mut out = Vec::with_capacity(n);
    let mut next = HEADER_LEN as u64;
    for _ in 0..n {
        let kind = BlobKind::from_u8(r.u8()?, what)?;
        let _flags = r.u8()?;
        let _reserved = r.u16()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let offset = r.u64()?;
        let id = BlobId(r.array()?);
        if offset != next {
            return Err(r.err(format!(
                "blob {} at offset {offset}, expected {next}",
                id.short()
            )));
        }
        if (stored_len as usize) < TAG_LEN + 1 || raw_len > MAX_BLOB_LEN {
            return Err(r.err(format!("blob {} has impossible lengths", id.short())));
        }
        next = offset + stored_len as u64;
        if next > toc_offset {
            return Err(r.err(format!("blob {} runs past the blob area", id.short())));
        }
        out.push(Entry {
            id,
            kind,
            offset,
            stored_len,
            raw_len,
        });
    }
    r.finish()?;
    if next != toc_offset {
        return Err(Error::corrupt(what, "blob area and table do not meet"));
    }
    Ok(out)
}

/// Reads a whole pack held in memory: its table (authenticated) and a key for its blobs.
pub fn open_pack(keys: &Keys, bytes: &[u8], what: &str) -> Result<(ObjectKey, Vec<Entry>)> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(Error::corrupt(
            what,
            format!("truncated pack ({} bytes)", bytes.len()),
        ));
    }
    let trailer: [u8; 4] = bytes[bytes.len() - 4..].try_into().expect("4 bytes");
    let (off, len) = toc_range(bytes.len() as u64, trailer, what)?;
    let toc = &bytes[off as usize..off as usize + len as usize];
    let entries = open_toc(keys, &bytes[..HEADER_LEN], toc, off, what)?;
    let header = Header::decode(&bytes[..HEADER_LEN], Magic::Pack, what)?;
    Ok((keys.header_key(&header, what)?, entries))
}

/// The key of a pack's blobs, from its first 48 bytes.
pub fn pack_key(keys: &Keys, head: &[u8], what: &str) -> Result<ObjectKey> {
    let header = Header::decode(head, Magic::Pack, what)?;
    keys.header_key(&header, what)
}

/// The slot (nonce) of the entry at `offset`, given the pack's table.
pub fn slot_of(entries: &[Entry], offset: u64) -> Option<u32> {
    entries
        .binary_search_by_key(&offset, |e| e.offset)
        .ok()
        .map(|i| i as u32)
}
