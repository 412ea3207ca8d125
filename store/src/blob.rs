//! Blobs: the sealed unit of storage inside a pack. Spec: `format-spec/05-packs.md`.
//!
//! A blob's plaintext is one compression byte followed by the (maybe compressed) bytes. It is
//! sealed with its pack's key under nonce = its index in the pack, with the blob id and kind as
//! associated data, so a blob cannot be moved to another slot, id or kind without detection.

use crate::crypto::ObjectKey;
use crate::error::{Error, Result};
use crate::id::BlobId;

/// The largest blob plaintext this build writes or accepts (a directory listing of ~1M
/// entries fits; chunks are at most 16 MiB).
pub const MAX_BLOB_LEN: u32 = 256 * 1024 * 1024;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file or stream data.
    Data = 0,
    /// An encoded tree (one directory).
    Tree = 1,
    /// Reserved: a run of data stored as a zstd delta against a base region (issue 6).
    DeltaRun = 2,
}

impl BlobKind {
    /// Decodes a kind byte; unknown kinds come from a newer format.
    pub fn from_u8(v: u8, what: &str) -> Result<Self> {
        match v {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            2 => Ok(BlobKind::DeltaRun),
            _ => Err(Error::NewerFormat {
                what: what.to_string(),
                found: v.into(),
                supported: 2,
            }),
        }
    }
}

/// Bytes of data read from a repository: a stretch of a shared buffer (a decoded delta run
/// or a data blob), so handing out a chunk of a run, or a prefix made of neighbouring chunks,
/// copies nothing.
#[derive(Clone, Debug)]
pub struct Bytes {
    buf: std::sync::Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
}

impl Bytes {
    /// All of `buf`.
    pub fn whole(buf: std::sync::Arc<Vec<u8>>) -> Self {
        let range = 0..buf.len();
        Self { buf, range }
    }

    /// Bytes `range` of `buf`, or `None` when `range` is not inside it.
    pub fn part(buf: std::sync::Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= buf.len()).then_some(Self { buf, range })
    }

    /// These bytes narrowed to `range` (relative to them), or `None` when it is not inside.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= self.len()).then(|| Self {
            buf: self.buf.clone(),
            range: self.range.start + range.start..self.range.start + range.end,
        })
    }

    /// `self` and `next` joined, when `next` starts in the same buffer where `self` ends.
    pub fn join(&self, next: &Bytes) -> Option<Self> {
        (std::sync::Arc::ptr_eq(&self.buf, &next.buf) && self.range.end == next.range.start).then(
            || Self {
                buf: self.buf.clone(),
                range: self.range.start..next.range.end,
            },
        )
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self::whole(std::sync::Arc::new(v))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Compresses `data` at `level` unless that does not make it smaller; returns the plaintext to
/// seal (compression byte first).
pub fn encode(data: &[u8], level: i32) -> Vec<u8> {
    if level > 0 && data.len() > 64 {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        out.push(ZSTD);
        if let Ok(c) = compress(data, level)
            && c.len() < data.len()
        {
            out.extend_from_slice(&c);
            return out;
        }
    }
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(RAW);
    out.extend_from_slice(data);
    out
}

thread_local! {
    /// A compression context per thread: making one per chunk showed in profiles of a
    /// backup.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The shortest match zstd is to look for in `len` bytes at `level` (0: its own choice).
/// At level 3 (the default) zstd looks for matches of 5 bytes, or of 4 for inputs of 128 to
/// 256 KiB; chunks over 128 KiB (dump chunks in delta repositories average 256 KiB) look for
/// 6. Measured with `zstd -b3` on 50 MB cut in blocks, and on whole first backups:
///
/// | | sysbench dump | corpus dump |
/// | --- | --- | --- |
/// | 256 KiB blocks, zstd's choice | 1.985:1, 576 MB/s | 3.239:1, 925 MB/s |
/// | 256 KiB blocks, 6 | 2.189:1, 1,264 MB/s | 3.287:1, 1,296 MB/s |
/// | 1 MiB blocks, zstd's choice | 2.038:1, 845 MB/s | 4.645:1, 1,432 MB/s |
/// | 1 MiB blocks, 6 | 2.180:1, 1,266 MB/s | 4.607:1, 1,542 MB/s |
/// | first backup, 5 / 6 | 77.2 / 73.3 MB, restored in 187 / 137 ms | 20.30 / 20.61 MB, 77 / 76 ms |
///
/// Compression speed is the same either way. Smaller chunks keep zstd's choice (6 would
/// cost the corpus dump 2.5% at 64 KiB), as do the other levels (not measured).
fn min_match(level: i32, len: usize) -> u32 {
    if level == 3 && len > 128 << 10 { 6 } else { 0 }
}

/// `data` compressed at `level` (a zstd frame) with this thread's context.
fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(level)?),
        };
        c.set_parameter(CParameter::CompressionLevel(level))?;
        c.set_parameter(CParameter::MinMatch(min_match(level, data.len())))?;
        c.compress(data)
    })
}

/// The associated data binding a blob to its id and kind.
fn aad(id: &BlobId, kind: BlobKind) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[..32].copy_from_slice(&id.0);
    a[32] = kind as u8;
    a
}

/// Seals an encoded blob as slot `index` of a pack.
pub fn seal(key: &ObjectKey, index: u32, id: &BlobId, kind: BlobKind, encoded: &[u8]) -> Vec<u8> {
    key.seal(index as u64, &aad(id, kind), encoded)
}

/// Opens, authenticates and decompresses a blob; checks its length against `raw_len`.
pub fn open(
    key: &ObjectKey,
    index: u32,
    id: &BlobId,
    kind: BlobKind,
    raw_len: u32,
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    let plain = open_encoded(key, index, id, kind, raw_len, sealed, what)?;
    decode(&plain, id, raw_len, what)
}

/// Opens and authenticates a blob, leaving it encoded (compression byte first), so it can be
/// sealed again elsewhere without compressing it again.
pub fn open_encoded(
    key: &ObjectKey,
    index: u32,
    id: &BlobId,
    kind: BlobKind,
    raw_len: u32,
    sealed: &[u8],
    what: &str,
) -> Result<Vec<u8>> {
    if raw_len > MAX_BLOB_LEN {
        return Err(Error::corrupt(
            what,
            format!("blob length {raw_len} exceeds the limit"),
        ));
    }
    key.open(index as u64, &aad(id, kind), sealed)
        .ok_or_else(|| Error::corrupt(what, format!("blob {} failed authentication", id.short())))
}

thread_local! {
    /// A decompression context per thread: making one per blob costs more than decompressing
    /// a small chunk.
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().expect("a zstd context"));
}

/// Decompresses a zstd frame of at most `capacity` bytes with this thread's context.
pub fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|d| d.decompress(frame, capacity))
}

/// An encoded blob's compression byte (one this build knows) and body.
fn split<'a>(plain: &'a [u8], what: &str) -> Result<(u8, &'a [u8])> {
    let (&comp, body) = plain
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty blob"))?;
    if comp != RAW && comp != ZSTD {
        return Err(Error::NewerFormat {
            what: what.to_string(),
            found: comp.into(),
            supported: 1,
        });
    }
    Ok((comp, body))
}

/// Refuses a blob that decoded to `n` bytes where its header says `want`.
fn check_len(id: &BlobId, n: usize, want: usize, what: &str) -> Result<()> {
    if n != want {
        return Err(Error::corrupt(
            what,
            format!(
                "blob {} holds {n} bytes, the header says {want}",
                id.short()
            ),
        ));
    }
    Ok(())
}

fn zstd_error(id: &BlobId, e: std::io::Error, what: &str) -> Error {
    Error::corrupt(what, format!("blob {}: zstd: {e}", id.short()))
}

/// Decompresses an encoded blob into `out`, which must be exactly as long as the blob.
pub fn decode_into(plain: &[u8], id: &BlobId, out: &mut [u8], what: &str) -> Result<()> {
    let n = match split(plain, what)? {
        (RAW, body) => {
            if body.len() == out.len() {
                out.copy_from_slice(body);
            }
            body.len()
        }
        (_, body) => DECOMPRESSOR
            .with_borrow_mut(|d| d.decompress_to_buffer(body, &mut *out))
            .map_err(|e| zstd_error(id, e, what))?,
    };
    check_len(id, n, out.len(), what)
}

/// Decompresses an encoded blob and checks its length.
pub fn decode(plain: &[u8], id: &BlobId, raw_len: u32, what: &str) -> Result<Vec<u8>> {
    let data = match split(plain, what)? {
        (RAW, body) => body.to_vec(),
        (_, body) => decompress(body, raw_len as usize).map_err(|e| zstd_error(id, e, what))?,
    };
    check_len(id, data.len(), raw_len as usize, what)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows like a sysbench table's: ids, then digits in dashed groups.
    fn rows(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed;
        let mut out = Vec::with_capacity(n + 200);
        let mut id = 1000;
        while out.len() < n {
            out.extend_from_slice(format!("({id},{},'", x % 100_000).as_bytes());
            for g in 0..10 {
                for _ in 0..11 {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    out.push(b'0' + (x >> 60) as u8 % 10);
                }
                if g < 9 {
                    out.push(b'-');
                }
            }
            out.extend_from_slice(b"'),\n");
            id += 1;
        }
        out.truncate(n);
        out
    }

    #[test]
    fn chunks_over_128_kib_look_for_matches_of_6_bytes_and_come_out_smaller() {
        assert_eq!(min_match(3, 128 << 10), 0);
        assert_eq!(min_match(3, (128 << 10) + 1), 6);
        assert_eq!(min_match(3, 1 << 20), 6);
        assert_eq!(min_match(4, 1 << 20), 0);
        assert_eq!(min_match(1, 200 << 10), 0);
        assert_eq!(min_match(5, 200 << 10), 0);
        assert_eq!(min_match(19, 200 << 10), 0);
        let data = rows(1, 200 << 10);
        let ours = compress(&data, 3).unwrap();
        let zstds = zstd::bulk::compress(&data, 3).unwrap();
        assert!(
            ours.len() < zstds.len(),
            "{} vs {}",
            ours.len(),
            zstds.len()
        );
        // The context is reused: a chunk of another size and level after it is compressed
        // as zstd alone would.
        let small = rows(2, 60 << 10);
        assert_eq!(
            compress(&small, 5).unwrap(),
            zstd::bulk::compress(&small, 5).unwrap()
        );
        for d in [&data, &small] {
            let enc = encode(d, 3);
            assert_eq!(decompress(&enc[1..], d.len()).unwrap(), **d);
        }
    }
}
