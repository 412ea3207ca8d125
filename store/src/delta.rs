//! Delta runs: consecutive new chunks of a file stored as one zstd frame compressed against a
//! stretch of the file's previous version (issue 6; spec: `format-spec/12-delta-runs.md`).
//!
//! Between two dumps of a database under an OLTP load, nearly every chunk differs from its
//! predecessor in a few bytes, so chunk deduplication stores almost the whole dump again. A
//! delta run stores what changed: the run's bytes compressed by zstd with the previous
//! version's matching bytes as a *prefix* (zstd's "patch-from"), with long-distance matching
//! and a window covering prefix and run.
//!
//! The blob's plaintext (after the compression byte [`DELTA`]) is
//!
//! ```text
//! version u8 (1) | depth u8
//! n u32 | n × (member chunk id [32] | length u32)      the chunks the run is made of
//! m u32 | m × (base chunk id [32] | length u32)        a stretch of the previous version
//! skip u32 | prefix length u32                         the prefix: bases[skip .. skip+len]
//! zstd frame                                           the run, compressed with the prefix
//! ```
//!
//! Members keep their own chunk ids, so the next version still deduplicates chunk by chunk
//! against a run. Bases are named by chunk id too; a base may itself be a member of an older
//! run, so decoding follows a chain, and `depth` (1 + the deepest base) bounds it.

use crate::blob::Bytes;

use crate::codec::{Put, Reader};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// The compression byte of a delta run (beside raw 0 and zstd 1, see `blob.rs`).
pub const DELTA: u8 = 2;
/// Layout version of the run header.
pub const RUN_VERSION: u8 = 1;
/// Most chunks in one run.
pub const MAX_MEMBERS: usize = 4096;
/// Most base chunks one run names.
pub const MAX_BASES: usize = 8192;
/// Longest prefix: with the run, it fits the decoder's window.
pub const MAX_PREFIX: u32 = 32 << 20;
/// Longest run.
pub const MAX_RUN: u32 = 32 << 20;
/// The decoder's largest window (2^26 = 64 MiB): prefix and run together.
pub const WINDOW_LOG_MAX: u32 = 26;

/// What a run is made of and what it was compressed against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunHeader {
    /// 1 + the depth of the deepest run a base chunk is a member of (0 for plain chunks).
    pub depth: u8,
    /// The chunks of the run, in order, with their lengths.
    pub members: Vec<(BlobId, u32)>,
    /// The base chunks, in order: a stretch of the previous version.
    pub bases: Vec<(BlobId, u32)>,
    /// Bytes of the concatenated bases before the prefix.
    pub skip: u32,
    /// Length of the prefix.
    pub prefix_len: u32,
}

impl RunHeader {
    /// Total length of the members: the run's length.
    pub fn run_len(&self) -> u64 {
        self.members.iter().map(|(_, l)| *l as u64).sum()
    }

    /// Total length of the bases.
    pub fn bases_len(&self) -> u64 {
        self.bases.iter().map(|(_, l)| *l as u64).sum()
    }

    /// Where each member starts in the run.
    pub fn member_offsets(&self) -> Vec<u32> {
        let mut off = 0u32;
        self.members
            .iter()
            .map(|(_, l)| {
                let o = off;
                off += l;
                o
            })
            .collect()
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.push(DELTA);
        out.push(RUN_VERSION);
        out.push(self.depth);
        for list in [&self.members, &self.bases] {
            out.put_u32(list.len() as u32);
            for (id, len) in list {
                out.extend_from_slice(&id.0);
                out.put_u32(*len);
            }
        }
        out.put_u32(self.skip);
        out.put_u32(self.prefix_len);
    }

    /// Checks the bounds every reader relies on.
    fn check(&self, what: &str) -> Result<()> {
        let bad = |why: String| Err(Error::corrupt(what, why));
        if self.depth == 0 {
            return bad("delta run of depth 0".into());
        }
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return bad(format!("{} members in a delta run", self.members.len()));
        }
        if self.bases.is_empty() || self.bases.len() > MAX_BASES {
            return bad(format!("{} base chunks in a delta run", self.bases.len()));
        }
        if self.members.iter().any(|(_, l)| *l == 0) || self.bases.iter().any(|(_, l)| *l == 0) {
            return bad("a chunk of length 0 in a delta run".into());
        }
        if self.run_len() > MAX_RUN as u64 {
            return bad(format!("a delta run of {} bytes", self.run_len()));
        }
        if self.prefix_len == 0
            || self.prefix_len > MAX_PREFIX
            || self.skip as u64 + self.prefix_len as u64 > self.bases_len()
        {
            return bad(format!(
                "prefix {}+{} outside its {} base bytes",
                self.skip,
                self.prefix_len,
                self.bases_len()
            ));
        }
        Ok(())
    }
}

/// The bases that overlap bytes `skip .. skip + len` of a run's bases laid end to end (its
/// prefix): each base's index and the range of its bytes that falls in the prefix.
pub fn prefix_plan(
    bases: &[(BlobId, u32)],
    skip: u32,
    len: u32,
) -> Vec<(usize, std::ops::Range<usize>)> {
    let (lo, hi) = (skip as u64, skip as u64 + len as u64);
    let mut plan = Vec::new();
    let mut at = 0u64;
    for (i, (_, base_len)) in bases.iter().enumerate() {
        let end = at + *base_len as u64;
        if end > lo && at < hi {
            plan.push((
                i,
                lo.saturating_sub(at) as usize..(hi.min(end) - at) as usize,
            ));
        }
        at = end;
    }
    plan
}

/// The prefix from the bases a [`prefix_plan`] named, read in its order; each must have its
/// listed length. Bases that lie side by side in one buffer (chunks of one decoded run) are
/// not copied.
pub fn join_prefix(
    bases: &[(BlobId, u32)],
    plan: &[(usize, std::ops::Range<usize>)],
    read: Vec<Bytes>,
    len: u32,
    what: &str,
) -> Result<Bytes> {
    let mut pieces: Vec<Bytes> = Vec::new();
    for ((i, range), bytes) in plan.iter().zip(read) {
        let (base, base_len) = &bases[*i];
        if bytes.len() != *base_len as usize {
            return Err(Error::corrupt(
                what,
                format!("base chunk {} is not {base_len} bytes", base.short()),
            ));
        }
        let piece = bytes.slice(range.clone()).expect("inside the base");
        match pieces.last().and_then(|p| p.join(&piece)) {
            Some(joined) => *pieces.last_mut().expect("one") = joined,
            None => pieces.push(piece),
        }
    }
    if let [one] = &pieces[..] {
        return Ok(one.clone());
    }
    let mut prefix = Vec::with_capacity(len as usize);
    for p in &pieces {
        prefix.extend_from_slice(p);
    }
    Ok(prefix.into())
}

/// The prefix a run names: bytes `skip .. skip + len` of its bases laid end to end. Only the
/// bases that overlap it are read (with `read`, in order).
pub fn assemble_prefix(
    bases: &[(BlobId, u32)],
    skip: u32,
    len: u32,
    what: &str,
    mut read: impl FnMut(&BlobId) -> Result<Bytes>,
) -> Result<Bytes> {
    let plan = prefix_plan(bases, skip, len);
    let read = plan
        .iter()
        .map(|(i, _)| read(&bases[*i].0))
        .collect::<Result<Vec<_>>>()?;
    join_prefix(bases, &plan, read, len, what)
}

/// The plaintext of a delta-run blob (compression byte first): `run` compressed at `level`
/// against `prefix`, which must be the bytes `header` names.
pub fn encode(header: &RunHeader, run: &[u8], prefix: &[u8], level: i32) -> Result<Vec<u8>> {
    debug_assert_eq!(header.run_len(), run.len() as u64);
    debug_assert_eq!(header.prefix_len as usize, prefix.len());
    header.check("new delta run")?;
    let mut out = Vec::with_capacity(run.len() / 8 + 64 + 36 * header.members.len());
    header.put(&mut out);
    let mut cctx = zstd::zstd_safe::CCtx::create();
    let window = window_log(prefix.len() + run.len());
    let set = |cctx: &mut zstd::zstd_safe::CCtx, p| {
        cctx.set_parameter(p)
            .map(|_| ())
            .map_err(|c| Error::Invalid(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))
    };
    use zstd::zstd_safe::CParameter;
    set(&mut cctx, CParameter::CompressionLevel(level))?;
    set(&mut cctx, CParameter::EnableLongDistanceMatching(true))?;
    set(&mut cctx, CParameter::WindowLog(window))?;
    set(&mut cctx, CParameter::ContentSizeFlag(true))?;
    cctx.ref_prefix(prefix)
        .map_err(|c| Error::Invalid(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
    let start = out.len();
    out.resize(start + zstd::zstd_safe::compress_bound(run.len()), 0);
    let n = cctx
        .compress2(&mut out[start..], run)
        .map_err(|c| Error::Invalid(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
    out.truncate(start + n);
    Ok(out)
}

/// The window that covers `n` bytes (prefix and run), at least 2^10.
fn window_log(n: usize) -> u32 {
    let mut log = 10;
    while (1usize << log) < n && log < WINDOW_LOG_MAX {
        log += 1;
    }
    log
}

/// Splits a delta-run plaintext (compression byte first) into its header and zstd frame,
/// checking every bound before anything is allocated from it.
pub fn parse<'a>(plain: &'a [u8], what: &'a str) -> Result<(RunHeader, &'a [u8])> {
    let mut r = Reader::new(plain, what);
    if r.u8()? != DELTA {
        return Err(Error::corrupt(what, "not a delta run"));
    }
    let v = r.u8()?;
    if v != RUN_VERSION {
        return Err(Error::NewerFormat {
            what: what.into(),
            found: v.into(),
            supported: RUN_VERSION.into(),
        });
    }
    let depth = r.u8()?;
    let mut lists = Vec::new();
    for max in [MAX_MEMBERS, MAX_BASES] {
        let n = r.u32()? as usize;
        if n > max || n > r.remaining() / 36 {
            return Err(Error::corrupt(
                what,
                format!("{n} chunks listed in a delta run"),
            ));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push((BlobId(r.array()?), r.u32()?));
        }
        lists.push(v);
    }
    let bases = lists.pop().expect("two lists");
    let members = lists.pop().expect("two lists");
    let h = RunHeader {
        depth,
        members,
        bases,
        skip: r.u32()?,
        prefix_len: r.u32()?,
    };
    h.check(what)?;
    let frame = r.bytes(r.remaining())?;
    Ok((h, frame))
}

/// Decompresses a run's frame against its prefix; checks the length.
pub fn decode(frame: &[u8], prefix: &[u8], run_len: u64, what: &str) -> Result<Vec<u8>> {
    use zstd::zstd_safe::DParameter;
    let zerr = |c| {
        Error::corrupt(
            what,
            format!("delta run: zstd: {}", zstd::zstd_safe::get_error_name(c)),
        )
    };
    let mut dctx = zstd::zstd_safe::DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
        .map_err(zerr)?;
    dctx.ref_prefix(prefix).map_err(zerr)?;
    // One byte more than the run, so a frame that decodes to more is caught. zstd writes
    // into the spare capacity: no need to zero it first.
    let mut out = Vec::with_capacity(run_len as usize + 1);
    let n = dctx.decompress(&mut out, frame).map_err(zerr)?;
    if n as u64 != run_len {
        return Err(Error::corrupt(
            what,
            format!("delta run decodes to {n} bytes, its members say {run_len}"),
        ));
    }
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b"abcdefghij klmnop,()'0123456789\n"[(x % 32) as usize]
            })
            .collect()
    }

    fn header(run: &[u8], prefix: &[u8]) -> RunHeader {
        RunHeader {
            depth: 1,
            members: vec![(BlobId([1; 32]), run.len() as u32)],
            bases: vec![(BlobId([2; 32]), prefix.len() as u32 + 10)],
            skip: 10,
            prefix_len: prefix.len() as u32,
        }
    }

    #[test]
    fn a_run_close_to_its_prefix_round_trips_and_costs_little() {
        let old = text(7, 2 << 20);
        let mut new = old.clone();
        for i in (0..new.len()).step_by(50_000) {
            new[i] = b'#';
        }
        let h = header(&new, &old);
        let enc = encode(&h, &new, &old, 3).unwrap();
        assert!(
            enc.len() < 40_000,
            "a run with 42 changed bytes took {} bytes",
            enc.len()
        );
        let (h2, frame) = parse(&enc, "t").unwrap();
        assert_eq!(h2, h);
        assert_eq!(decode(frame, &old, h.run_len(), "t").unwrap(), new);
    }

    #[test]
    fn the_wrong_prefix_or_length_fails_and_never_panics() {
        let old = text(1, 100_000);
        let new = text(2, 100_000);
        let h = header(&new, &old);
        let enc = encode(&h, &new, &old, 3).unwrap();
        let (_, frame) = parse(&enc, "t").unwrap();
        let other = text(3, 100_000);
        if let Ok(d) = decode(frame, &other, h.run_len(), "t") {
            assert_ne!(d, new);
        }
        assert!(decode(frame, &old, h.run_len() - 1, "t").is_err());
        for cut in [0, 1, 3, 20, enc.len() / 2] {
            let _ = parse(&enc[..cut], "t").and_then(|(h, f)| decode(f, &old, h.run_len(), "t"));
        }
    }

    #[test]
    fn headers_out_of_bounds_are_refused() {
        let run = text(4, 1000);
        let prefix = text(5, 1000);
        let mut h = header(&run, &prefix);
        h.skip = 11;
        assert!(encode(&h, &run, &prefix, 3).is_err());
        let mut h = header(&run, &prefix);
        h.depth = 0;
        assert!(encode(&h, &run, &prefix, 3).is_err());
        let good = encode(&header(&run, &prefix), &run, &prefix, 3).unwrap();
        let mut bad = good.clone();
        bad[3..7].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&bad, "t").is_err());
    }
}
