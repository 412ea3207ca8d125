//! Delta runs: consecutive new chunks of a file stored as edits against a stretch of the
//! file's previous version (issue 6; spec: `format-spec/12-delta-runs.md`).
//!
//! Between two dumps of a database under an OLTP load, nearly every chunk differs from its
//! predecessor in a few bytes, so chunk deduplication stores almost the whole dump again. A
//! delta run stores what changed: copies from the previous version's matching bytes (the
//! *prefix*) and the literal bytes between them, compressed by zstd. (Runs of version 1, a
//! zstd frame compressed with the prefix as zstd's "patch-from" prefix, are still read.)
//!
//! The blob's plaintext (after the compression byte [`DELTA`]) is
//!
//! ```text
//! version u8 (2) | depth u8
//! n u32 | n × (member chunk id [32] | length u32)      the chunks the run is made of
//! m u32 | m × (base chunk id [32] | length u32)        a stretch of the previous version
//! skip u32 | prefix length u32                         the prefix: bases[skip .. skip+len]
//! zstd frame                                           the run's edits (see [`Edits`])
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
/// Layout version of the runs this build writes: 2, an edit list (1, a zstd frame compressed
/// against the prefix, is still read).
pub const RUN_VERSION: u8 = 2;
/// Shortest copy an edit list may hold (except none at all): bounds the number of edits.
pub const MIN_COPY: u32 = 16;
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

/// A prefix buffer cut into the places of the bases a [`prefix_plan`] named, in its order
/// (the buffer must be as long as they are together), so each can be filled apart.
pub fn places<'a>(
    prefix: &'a mut [u8],
    plan: &[(usize, std::ops::Range<usize>)],
) -> Vec<&'a mut [u8]> {
    let mut places = Vec::with_capacity(plan.len());
    let mut rest = prefix;
    for (_, range) in plan {
        let (place, after) = rest.split_at_mut(range.len());
        places.push(place);
        rest = after;
    }
    places
}

/// The prefix from the bases a [`prefix_plan`] named, read in its order (each must have its
/// listed length), as consecutive pieces: bases that lie side by side in one buffer (chunks
/// of one decoded run) make one piece. Nothing is copied.
pub fn join_prefix(
    bases: &[(BlobId, u32)],
    plan: &[(usize, std::ops::Range<usize>)],
    read: Vec<Bytes>,
    what: &str,
) -> Result<Vec<Bytes>> {
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
    Ok(pieces)
}

/// Pieces laid end to end in one buffer.
fn concat(pieces: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for p in pieces {
        out.extend_from_slice(p);
    }
    out
}

/// The plaintext of a delta-run blob (compression byte first): `run` as an edit list against
/// `prefix` (which must be the bytes `header` names), compressed by zstd at `level`. `hint`
/// is where the run is expected to start in the prefix.
pub fn encode(
    header: &RunHeader,
    run: &[u8],
    prefix: &[u8],
    hint: usize,
    level: i32,
) -> Result<Vec<u8>> {
    debug_assert_eq!(header.run_len(), run.len() as u64);
    debug_assert_eq!(header.prefix_len as usize, prefix.len());
    header.check("new delta run")?;
    let edits = Edits::find(prefix, run, hint);
    let mut out = Vec::with_capacity(run.len() / 8 + 64 + 36 * header.members.len());
    header.put(&mut out);
    let frame = zstd::bulk::compress(&edits.to_bytes(), level)
        .map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
    out.extend_from_slice(&frame);
    Ok(out)
}

/// One edit: `lit` bytes from the literals, then `len` bytes of the prefix from `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edit {
    /// Literal bytes first.
    pub lit: u32,
    /// Where the copy starts in the prefix.
    pub from: u32,
    /// Bytes copied (0, or at least [`MIN_COPY`]).
    pub len: u32,
}

/// A run as copies from its prefix and literal bytes between them. Copies from a prefix can
/// be mapped through the runs the prefix lies in, so a reader can compose a chain instead of
/// decoding each level of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    /// The edits, in order.
    pub edits: Vec<Edit>,
    /// All literal bytes, in order.
    pub literals: Vec<u8>,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(r: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Anchors: the ends of the 8 bytes whose product with [`PICK`] has its top 5 bits clear
/// (one in 32 on average, the same in both versions wherever their bytes agree). Each is
/// known by a hash of the [`SPAN`] bytes before it. Every position is tested on its own
/// (a load and a multiply, no chain from byte to byte), so the prefix is indexed at a
/// few times the speed of a rolling hash, and anchors are found again right after a copy.
const PICK: u64 = 0x9e37_79b9_7f4a_7c15;
/// Bytes an anchor's hash covers (a copy found through it is at least this long).
const SPAN: usize = 32;

#[inline]
fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether `end` is an anchor of `b` (`end >= SPAN`): what the masks below tell 64 at a
/// time.
#[cfg(test)]
fn is_anchor(b: &[u8], end: usize) -> bool {
    word(b, end - 8).wrapping_mul(PICK) >> 59 == 0
}

/// The hash of the [`SPAN`] bytes before `end`.
#[inline]
fn anchor_hash(b: &[u8], end: usize) -> u64 {
    let w = &b[end - SPAN..end];
    let h = word(w, 0).wrapping_mul(0xff51_afd7_ed55_8ccd)
        ^ word(w, 8)
            .wrapping_mul(0xc4ce_b9fe_1a85_ec53)
            .rotate_left(21)
        ^ word(w, 16)
            .wrapping_mul(0x87c3_7b91_1142_53d5)
            .rotate_left(42)
        ^ word(w, 24).wrapping_mul(0x4cf5_ad43_2745_937f);
    h ^ h >> 31
}

/// Which of ends `end .. end + n` (`n` at most 64, `end >= 8`, the last end at most
/// `b.len()`) are anchors of `b`: bit `j` for end `end + j`, each tested on its own (no
/// branch per byte).
fn anchor_mask_scalar(b: &[u8], end: usize, n: usize) -> u64 {
    let block = &b[end - 8..end - 8 + n + 7];
    let mut mask = 0u64;
    for (j, w) in block.windows(8).enumerate() {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        mask |= ((w.wrapping_mul(PICK) >> 59 == 0) as u64) << j;
    }
    mask
}

/// [`anchor_mask_scalar`] of 64 ends, eight at a time: load `s` holds the words of ends
/// `end + s + 8k`, each multiplied and compared in one lane, and its eight bits are
/// spread to their places. Indexing a prefix spent a third of a delta backup in the
/// scalar loop.
///
/// # Safety
/// The CPU must have AVX-512 F, DQ and BW and BMI2, and `b[end - 8 .. end + 63]` must lie
/// inside `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,bmi2")]
unsafe fn anchor_mask_avx512(b: &[u8], end: usize) -> u64 {
    use std::arch::x86_64::*;
    debug_assert!(end >= 8 && end + 63 <= b.len());
    let pick = _mm512_set1_epi64(PICK as i64);
    let bound = _mm512_set1_epi64(1 << 59);
    let mut mask = 0u64;
    for s in 0..8 {
        // SAFETY: bytes `end - 8 + s .. end + 56 + s` lie inside `b` (the caller's promise).
        let w = unsafe { _mm512_loadu_si512(b.as_ptr().add(end - 8 + s).cast()) };
        let hit = _mm512_cmplt_epu64_mask(_mm512_mullo_epi64(w, pick), bound);
        mask |= _pdep_u64(hit as u64, 0x0101_0101_0101_0101 << s);
    }
    mask
}

/// Proof that the CPU has what [`anchor_mask_avx512`] needs: only [`wide_masks`] makes one,
/// so safe code cannot ask for the wide path on a CPU without it.
#[derive(Clone, Copy, Debug)]
struct Wide(());

/// A [`Wide`] where the CPU has AVX-512 F, DQ and BW and BMI2 (asked once).
fn wide_masks() -> Option<Wide> {
    #[cfg(target_arch = "x86_64")]
    {
        static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let has = *WIDE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("bmi2")
        });
        has.then_some(Wide(()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// [`anchor_mask_scalar`], eight lanes at a time where the CPU allows.
#[inline]
fn anchor_mask(b: &[u8], end: usize, n: usize, wide: Option<Wide>) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if wide.is_some() && n == 64 && end + 63 <= b.len() {
        // SAFETY: a `Wide` exists only where `wide_masks` found the features, and the bytes
        // were just checked to lie inside `b`.
        return unsafe { anchor_mask_avx512(b, end) };
    }
    let _ = wide;
    anchor_mask_scalar(b, end, n)
}

/// Calls `f` with the anchors of `b` in order, as (hash, end). Ends are tested 64 at a
/// time into a mask (no branch per byte), then the mask's bits are read.
fn anchors(b: &[u8], mut f: impl FnMut(u64, usize)) {
    let wide = wide_masks();
    let mut end = SPAN;
    while end <= b.len() {
        let n = (b.len() + 1 - end).min(64);
        let mut mask = anchor_mask(b, end, n, wide);
        while mask != 0 {
            let e = end + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            f(anchor_hash(b, e), e);
        }
        end += 64;
    }
}

/// Anchor hashes to where they first end in the prefix: an open-addressing table of
/// `tag << bits | end` in 32 bits (`bits` as many as the prefix's length needs, the tag the
/// hash's top bits in the rest), sized for a load of one half. A hash map's entry API cost a
/// third of a delta backup of the corpus dump; this costs one multiply and a probe or two.
/// An anchor of another hash with the same tag is taken for this one now and then (one in
/// 256 probes for an 8 MiB prefix): its bytes then differ, so no copy is made of it, and at
/// worst a copy is missed.
struct AnchorIndex {
    slots: Vec<u32>,
    bits: u32,
}

/// Slots probed before an anchor is given up (lost anchors only cost compression).
const PROBES: usize = 8;

impl AnchorIndex {
    fn build(prefix: &[u8]) -> Self {
        // Exactly sized (a power of two would have been up to twice as large, and the
        // larger the table the more of its slots miss the caches).
        let mut index = AnchorIndex {
            slots: vec![0; (prefix.len() / 16).max(64)],
            bits: usize::BITS - prefix.len().leading_zeros(),
        };
        // Inserted in order (the first end of a hash wins), each slot fetched [`AHEAD`]
        // anchors before: the table is larger than the caches, and a miss per anchor was
        // half the cost of indexing.
        const AHEAD: usize = 16;
        let mut ring = [(0u64, 0usize); AHEAD];
        let mut n = 0usize;
        anchors(prefix, |h, end| {
            if n >= AHEAD {
                let (h, end) = ring[n % AHEAD];
                index.insert(h, end);
            }
            index.prefetch(h);
            ring[n % AHEAD] = (h, end);
            n += 1;
        });
        for k in n.saturating_sub(AHEAD)..n {
            let (h, end) = ring[k % AHEAD];
            index.insert(h, end);
        }
        index
    }

    #[inline]
    fn prefetch(&self, h: u64) {
        prefetch(self.slots[self.home(h)..].as_ptr().cast());
    }

    /// The slot a hash is first looked for in: its mix scaled to the table's length.
    fn home(&self, h: u64) -> usize {
        ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) as u128 * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot after `k`, round the end.
    fn next(&self, k: usize) -> usize {
        if k + 1 == self.slots.len() { 0 } else { k + 1 }
    }

    /// The tag of hash `h`: its top bits, as many as `bits` leaves (a prefix is at most
    /// [`MAX_PREFIX`] long, so at least 6).
    fn tag(&self, h: u64) -> u32 {
        (h >> 32 >> self.bits) as u32
    }

    /// Keeps the first end of each hash (a later one with the same tag is left out).
    fn insert(&mut self, h: u64, end: usize) {
        let (tag, bits) = (self.tag(h), self.bits);
        let mut k = self.home(h);
        for _ in 0..PROBES {
            let v = self.slots[k];
            if v == 0 {
                self.slots[k] = tag << bits | end as u32;
                return;
            }
            if v >> bits == tag {
                return;
            }
            k = self.next(k);
        }
    }

    fn get(&self, h: u64) -> Option<usize> {
        let (tag, bits) = (self.tag(h), self.bits);
        let mut k = self.home(h);
        for _ in 0..PROBES {
            let v = self.slots[k];
            if v == 0 {
                return None;
            }
            if v >> bits == tag {
                return Some((v & ((1 << bits) - 1)) as usize);
            }
            k = self.next(k);
        }
        None
    }
}

/// Asks the CPU to fetch the cache line at `p` (a hint: nothing is read).
#[inline]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and never faults, so
    // any address is harmless.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to fetch the first two cache lines of `b` (the second may lie past a short
/// slice: harmless, see [`prefetch`]).
#[inline]
pub fn prefetch_bytes(b: &[u8]) {
    prefetch(b.as_ptr());
    prefetch(b.as_ptr().wrapping_add(64));
}

/// How many bytes `a` and `b` have in common from their start.
fn common(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n && a[i..i + 8] == b[i..i + 8] {
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// How many bytes `a` and `b` have in common at their ends.
fn common_back(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut k = 0;
    while k + 8 <= n && a[n - k - 8..n - k] == b[n - k - 8..n - k] {
        k += 8;
    }
    while k < n && a[n - k - 1] == b[n - k - 1] {
        k += 1;
    }
    k
}

impl Edits {
    /// Finds copies of `prefix` in `run`: an edit in place is found by trying the same shift
    /// again a little after the last copy ended, anything else through anchors (positions
    /// picked by content, so they are the same in both versions), each match extended both
    /// ways. The run is first tried at `hint` in the prefix (where it is expected), and the
    /// anchors of the prefix are indexed only once something else is needed. The writer's
    /// choice: readers only apply what it found.
    pub fn find(prefix: &[u8], run: &[u8], hint: usize) -> Self {
        let mut index: Option<AnchorIndex> = None;
        let min = MIN_COPY as usize;
        let mut e = Edits::default();
        let (mut i, mut lit_start) = (0usize, 0usize);
        // Where the last copy ended: in the run and in the prefix (as if one had ended just
        // before the run, at the hint).
        let mut last: Option<(usize, usize)> = Some((0, hint.min(prefix.len())));
        // Which of the 64 ends from `mask_at` on are anchors of the run.
        let (wide, mut mask, mut mask_at) = (wide_masks(), 0u64, usize::MAX - 64);
        let emit = |e: &mut Edits, lit_start: usize, at: usize, from: usize, len: usize| {
            e.edits.push(Edit {
                lit: (at - lit_start) as u32,
                from: from as u32,
                len: len as u32,
            });
            e.literals.extend_from_slice(&run[lit_start..at]);
        };
        while i < run.len() {
            if let Some((re, pe)) = last
                && i >= re
                && i - re <= 4096
                && i + min <= run.len()
            {
                // After the last copy: bytes changed in place (the same shift again), or
                // bytes inserted (the prefix goes on where the copy ended). Rows updated or
                // added are found this way without indexing the prefix.
                let same_shift = pe + (i - re);
                let found = [same_shift, pe].into_iter().find(|&p| {
                    p + min <= prefix.len()
                        && (p != same_shift || i - re <= 256)
                        && run[i..i + min] == prefix[p..p + min]
                });
                if let Some(p) = found {
                    let len = common(&run[i..], &prefix[p..]);
                    emit(&mut e, lit_start, i, p, len);
                    i += len;
                    (lit_start, last) = (i, Some((i, p + len)));
                    continue;
                }
            }
            i += 1;
            if i < SPAN {
                continue;
            }
            // Ends are tested 64 at a time, as when indexing the prefix.
            if !(mask_at <= i && i < mask_at + 64) {
                mask = anchor_mask(run, i, (run.len() + 1 - i).min(64), wide);
                mask_at = i;
                // Their slots are fetched now, while the bytes before them are scanned:
                // looking anchors up missed the caches and cost a fifth of the search.
                if let Some(index) = &index {
                    let mut m = mask;
                    while m != 0 {
                        index.prefetch(anchor_hash(run, i + m.trailing_zeros() as usize));
                        m &= m - 1;
                    }
                }
            }
            if mask >> (i - mask_at) & 1 == 0 {
                continue;
            }
            let Some(p) = index
                .get_or_insert_with(|| AnchorIndex::build(prefix))
                .get(anchor_hash(run, i))
            else {
                continue;
            };
            // run[..i] ends where prefix[..p] ends: extend both ways.
            let back = common_back(&run[lit_start..i], &prefix[..p]);
            let fwd = common(&run[i..], &prefix[p..]);
            if back + fwd < min {
                continue;
            }
            emit(&mut e, lit_start, i - back, p - back, back + fwd);
            i += fwd;
            (lit_start, last) = (i, Some((i, p + fwd)));
        }
        if lit_start < run.len() {
            emit(&mut e, lit_start, run.len(), 0, 0);
        }
        e
    }

    /// The stored form: the number of edits, each as literal length, copy length and the
    /// copy's start relative to where the last copy ended (zigzag), all varints; then the
    /// literals.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.edits.len() * 6 + self.literals.len() + 10);
        put_varint(&mut out, self.edits.len() as u64);
        let mut expect = 0i64;
        for ed in &self.edits {
            put_varint(&mut out, ed.lit as u64);
            put_varint(&mut out, ed.len as u64);
            let d = ed.from as i64 - expect;
            put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
            expect = ed.from as i64 + ed.len as i64;
        }
        out.extend_from_slice(&self.literals);
        out
    }

    /// Reads and checks the stored form of a run of `run_len` bytes against a prefix of
    /// `prefix_len`: every copy inside the prefix, at least [`MIN_COPY`] long (or empty), and
    /// literals and copies adding up to the run exactly.
    pub fn from_bytes(mut r: &[u8], run_len: u64, prefix_len: u32, what: &str) -> Result<Self> {
        let bad = |why: &str| Error::corrupt(what, format!("delta run edits: {why}"));
        let n = varint(&mut r).ok_or_else(|| bad("truncated"))?;
        // Each edit holds at least one byte of the run.
        if n > run_len {
            return Err(bad("more edits than bytes"));
        }
        let mut edits = Vec::with_capacity(n as usize);
        let (mut expect, mut total, mut lits) = (0i64, 0u64, 0u64);
        for _ in 0..n {
            let lit = varint(&mut r).ok_or_else(|| bad("truncated"))?;
            let len = varint(&mut r).ok_or_else(|| bad("truncated"))?;
            let z = varint(&mut r).ok_or_else(|| bad("truncated"))?;
            // Bounded before any sum: no edit is longer than the run.
            if lit > run_len || len > run_len {
                return Err(bad("an edit longer than the run"));
            }
            let from = expect.checked_add(((z >> 1) as i64) ^ -((z & 1) as i64));
            let from = from.filter(|f| *f >= 0 && (*f as u64) + len <= prefix_len as u64);
            let Some(from) = from else {
                return Err(bad("a copy outside the prefix"));
            };
            if (len != 0 && len < MIN_COPY as u64) || lit + len == 0 {
                return Err(bad("an edit too short"));
            }
            total += lit + len;
            lits += lit;
            if total > run_len {
                return Err(bad("more bytes than the run"));
            }
            edits.push(Edit {
                lit: lit as u32,
                from: from as u32,
                len: len as u32,
            });
            expect = from + len as i64;
        }
        if total != run_len || lits != r.len() as u64 {
            return Err(bad("lengths do not add up to the run"));
        }
        Ok(Edits {
            edits,
            literals: r.to_vec(),
        })
    }

    /// The run: the edits applied to a prefix given as consecutive pieces.
    pub fn apply(&self, prefix: &[Bytes], run_len: u64) -> Vec<u8> {
        let mut starts = Vec::with_capacity(prefix.len());
        let mut at = 0usize;
        for p in prefix {
            starts.push(at);
            at += p.len();
        }
        let mut out = Vec::with_capacity(run_len as usize);
        let mut l = 0usize;
        for ed in &self.edits {
            out.extend_from_slice(&self.literals[l..l + ed.lit as usize]);
            l += ed.lit as usize;
            let (mut from, mut len) = (ed.from as usize, ed.len as usize);
            let mut k = starts.partition_point(|s| *s <= from).saturating_sub(1);
            while len > 0 {
                let off = from - starts[k];
                let n = len.min(prefix[k].len() - off);
                out.extend_from_slice(&prefix[k][off..off + n]);
                (from, len, k) = (from + n, len - n, k + 1);
            }
        }
        out
    }
}

/// Where a stretch of a composed run comes from, as [`Composed::range`] hands it out.
#[derive(Clone, Copy, Debug)]
pub enum Src<'a> {
    /// A buffer (a run's literals, or a run decoded whole).
    Bytes(&'a [u8]),
    /// A chunk stored on its own.
    Chunk(&'a BlobId),
}

/// Marks a source index as one of [`Composed`]'s buffers (else it is one of its chunks).
const BUF: u32 = 1 << 31;

/// A stretch of a composed run: `len` bytes of source `src` from offset `at`. Twelve bytes,
/// so the stretch lists of dense edits stay small and cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    len: u32,
    src: u32,
    at: u32,
}

/// A run as stretches of plain chunks and buffers: what a chain of runs composes to, so a
/// reader copies each byte once, however deep the chain.
#[derive(Clone, Debug, Default)]
pub struct Composed {
    starts: Vec<u64>,
    segs: Vec<Seg>,
    /// The chunks and buffers stretches name by index (a chunk may appear more than once).
    chunks: Vec<BlobId>,
    bufs: Vec<std::sync::Arc<Vec<u8>>>,
    len: u64,
    /// Its table from byte offsets to stretches, built when first asked for (once the run is
    /// put together).
    table: std::sync::OnceLock<SegTable>,
}

/// Where a [`Composed`]'s stretches start, by byte offset: entry `b` is the stretch holding
/// byte `b << shift`. A run over a dense run below copies short stretches of it from
/// anywhere (rows rebuilt of fragments found all over the older version), so the copies of
/// consecutive edits land far apart there: a search by halves, or outwards from the last
/// copy, crossed 16 steps and as many cache misses for each. The table answers with one
/// read and a step or two.
#[derive(Clone, Debug, Default)]
struct SegTable {
    shift: u32,
    first: Vec<u32>,
}

impl Composed {
    /// A run held whole in a buffer.
    pub fn whole(buf: std::sync::Arc<Vec<u8>>) -> Composed {
        let mut c = Composed::default();
        let len = u32::try_from(buf.len()).expect("a run is under 4 GiB");
        c.bufs.push(buf);
        c.push(Seg {
            len,
            src: BUF,
            at: 0,
        });
        c
    }

    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many stretches it has.
    pub fn stretches(&self) -> usize {
        self.segs.len()
    }

    /// Bytes it holds of its own: its lists, and its first buffer (its literals, or the run
    /// decoded whole); the buffers of the runs below are theirs.
    pub fn held_bytes(&self) -> usize {
        use std::mem::size_of;
        self.segs.capacity() * size_of::<Seg>()
            + self.starts.capacity() * size_of::<u64>()
            + self.chunks.capacity() * size_of::<BlobId>()
            + self.bufs.first().map_or(0, |b| b.len())
            + self
                .table
                .get()
                .map_or(0, |t| t.first.capacity() * size_of::<u32>())
    }

    /// Appends a stretch, merged with the last one when it continues it.
    fn push(&mut self, seg: Seg) {
        debug_assert!(self.table.get().is_none(), "pushed to after it was read");
        if seg.len == 0 {
            return;
        }
        if let Some(last) = self.segs.last_mut()
            && last.src == seg.src
            && last.at.checked_add(last.len) == Some(seg.at)
            && last.len.checked_add(seg.len).is_some()
        {
            last.len += seg.len;
            self.len += seg.len as u64;
            return;
        }
        self.starts.push(self.len);
        self.len += seg.len as u64;
        self.segs.push(seg);
    }

    /// The source a stretch names.
    fn src(&self, src: u32) -> Src<'_> {
        if src & BUF != 0 {
            Src::Bytes(&self.bufs[(src & !BUF) as usize])
        } else {
            Src::Chunk(&self.chunks[src as usize])
        }
    }

    /// The index of the segment holding byte `from` (the last one past its end, or 0 when
    /// empty).
    fn seg_at(&self, from: u64) -> usize {
        let n = self.starts.len();
        if n == 0 {
            return 0;
        }
        let t = self.table.get_or_init(|| self.build_table());
        let b = ((from >> t.shift) as usize).min(t.first.len() - 1);
        let lo = t.first[b] as usize;
        // The stretches starting within the same entry: a few at most.
        let hi = t.first.get(b + 1).map_or(n, |&h| h as usize + 1).min(n);
        lo + self.starts[lo..hi]
            .partition_point(|s| *s <= from)
            .saturating_sub(1)
    }

    /// Its [`SegTable`]: about one entry per stretch, each covering 256 bytes at least.
    fn build_table(&self) -> SegTable {
        let per = self.len / self.starts.len().max(1) as u64;
        let shift = (64 - per.leading_zeros()).clamp(8, 30);
        let entries = (self.len >> shift) as usize + 1;
        let mut first = Vec::with_capacity(entries);
        let mut k = 0usize;
        for b in 0..entries as u64 {
            let at = b << shift;
            while k + 1 < self.starts.len() && self.starts[k + 1] <= at {
                k += 1;
            }
            first.push(k as u32);
        }
        SegTable { shift, first }
    }

    /// Its stretches over bytes `from .. from + len` (which must lie inside it), cut to
    /// them.
    fn clipped(&self, from: u64, len: u64) -> impl Iterator<Item = Seg> + '_ {
        self.clipped_from(from, len, self.seg_at(from))
    }

    /// [`Composed::clipped`], given the segment `k` holding byte `from`.
    fn clipped_from(&self, from: u64, len: u64, k: usize) -> impl Iterator<Item = Seg> + '_ {
        debug_assert!(from + len <= self.len);
        let end = from + len;
        self.starts[k..]
            .iter()
            .zip(&self.segs[k..])
            .take_while(move |(s, _)| **s < end)
            .map(move |(&s, seg)| {
                let lo = from.max(s) - s;
                let hi = end.min(s + seg.len as u64) - s;
                Seg {
                    len: (hi - lo) as u32,
                    src: seg.src,
                    at: seg.at + lo as u32,
                }
            })
    }

    /// Its bytes `from .. from + len` (which must lie inside it), in place: each stretch as
    /// its source, the offset in that source, and the length.
    pub fn range(&self, from: u64, len: u64) -> impl Iterator<Item = (Src<'_>, usize, u32)> + '_ {
        self.clipped(from, len)
            .map(|seg| (self.src(seg.src), seg.at as usize, seg.len))
    }

    /// The run `edits` make of `prefix`.
    pub fn apply(edits: Edits, prefix: &Prefix) -> Composed {
        // Each edit is a literal and a copy, the copy one stretch or more: sized for two
        // each, so the lists are seldom grown (and copied) while composing.
        let cap = edits.edits.len() * 2 + 1;
        let mut out = Composed {
            starts: Vec::with_capacity(cap),
            segs: Vec::with_capacity(cap),
            chunks: Vec::new(),
            bufs: vec![std::sync::Arc::new(edits.literals)],
            ..Composed::default()
        };
        let mut lowers: Vec<Lowered> = prefix
            .lowers
            .iter()
            .map(|c| Lowered {
                remap: vec![u32::MAX; c.chunks.len() + c.bufs.len()],
            })
            .collect();
        // The prefix's plain chunks, by piece, as numbered in `out` (`u32::MAX` until used).
        let mut chunks = vec![u32::MAX; prefix.parts.len()];
        let mut l = 0u32;
        for e in &edits.edits {
            out.push(Seg {
                len: e.lit,
                src: BUF,
                at: l,
            });
            l += e.lit;
            prefix.copy_into(
                e.from as u64,
                e.len as u64,
                &mut out,
                &mut chunks,
                &mut lowers,
            );
        }
        out
    }

    /// Appends its bytes `from .. from + len` (which must lie inside it) to `out`, its
    /// sources renumbered through `at.remap`.
    fn slice_into(&self, from: u64, len: u64, out: &mut Composed, at: &mut Lowered) {
        let remap = &mut at.remap;
        for seg in self.clipped(from, len) {
            let slot = if seg.src & BUF != 0 {
                self.chunks.len() + (seg.src & !BUF) as usize
            } else {
                seg.src as usize
            };
            if remap[slot] == u32::MAX {
                remap[slot] = if seg.src & BUF != 0 {
                    out.bufs.push(self.bufs[(seg.src & !BUF) as usize].clone());
                    (out.bufs.len() - 1) as u32 | BUF
                } else {
                    out.chunks.push(self.chunks[seg.src as usize]);
                    (out.chunks.len() - 1) as u32
                };
            }
            out.push(Seg {
                src: remap[slot],
                ..seg
            });
        }
    }
}

/// What composing keeps of a run below while reading it: its sources as renumbered in the
/// new run (index: chunks first, then buffers; `u32::MAX` until used).
struct Lowered {
    remap: Vec<u32>,
}

/// A run's prefix as it is read when composing: stretches of plain chunks and of runs
/// composed below, read in place (the prefix itself is never put together).
#[derive(Debug, Default)]
pub struct Prefix {
    starts: Vec<u64>,
    parts: Vec<Piece>,
    lowers: Vec<std::sync::Arc<Composed>>,
    len: u64,
}

/// A stretch of a [`Prefix`], as it is pushed.
#[derive(Debug)]
pub enum Part {
    /// Bytes `offset .. offset + len` of a chunk stored on its own.
    Chunk(BlobId, u32, u32),
    /// Bytes `offset .. offset + len` of a run composed below.
    Lower(std::sync::Arc<Composed>, u64, u64),
}

/// A stretch of a [`Prefix`], as it is kept: runs below by their index in `lowers`.
#[derive(Debug)]
enum Piece {
    Chunk(BlobId, u32, u32),
    Lower(usize, u64, u64),
}

impl Prefix {
    /// Appends a stretch.
    pub fn push(&mut self, part: Part) {
        let (piece, len) = match part {
            Part::Chunk(c, o, n) => (Piece::Chunk(c, o, n), n as u64),
            Part::Lower(c, o, n) => {
                let k = match self
                    .lowers
                    .iter()
                    .position(|l| std::sync::Arc::ptr_eq(l, &c))
                {
                    Some(k) => k,
                    None => {
                        self.lowers.push(c);
                        self.lowers.len() - 1
                    }
                };
                (Piece::Lower(k, o, n), n)
            }
        };
        self.starts.push(self.len);
        self.len += len;
        self.parts.push(piece);
    }

    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends its bytes `from .. from + len` (which must lie inside it) to `out`.
    fn copy_into(
        &self,
        from: u64,
        len: u64,
        out: &mut Composed,
        chunks: &mut [u32],
        lowers: &mut [Lowered],
    ) {
        debug_assert!(from + len <= self.len);
        let end = from + len;
        let mut k = self
            .starts
            .partition_point(|s| *s <= from)
            .saturating_sub(1);
        while k < self.parts.len() && self.starts[k] < end {
            let s = self.starts[k];
            let lo = from.max(s) - s;
            match &self.parts[k] {
                Piece::Chunk(c, o, n) => {
                    let hi = end.min(s + *n as u64) - s;
                    // A plain chunk of the prefix: named once in `out`, when first used.
                    if chunks[k] == u32::MAX {
                        out.chunks.push(*c);
                        chunks[k] = (out.chunks.len() - 1) as u32;
                    }
                    let src = chunks[k];
                    out.push(Seg {
                        len: (hi - lo) as u32,
                        src,
                        at: o + lo as u32,
                    });
                }
                Piece::Lower(i, o, n) => {
                    let hi = end.min(s + n) - s;
                    self.lowers[*i].slice_into(o + lo, hi - lo, out, &mut lowers[*i]);
                }
            }
            k += 1;
        }
    }
}

/// The stored body of a run after its header.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Version 1: a zstd frame of the run compressed against the prefix.
    Frame(&'a [u8]),
    /// Version 2: a zstd frame of the run's [`Edits`].
    Edits(&'a [u8]),
}

impl Body<'_> {
    /// The stored bytes (a zstd frame either way).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Body::Frame(b) | Body::Edits(b) => b,
        }
    }
}

/// The edits of a version 2 body (`None` for version 1), read and checked.
pub fn edits(body: Body, h: &RunHeader, what: &str) -> Result<Option<Edits>> {
    let Body::Edits(frame) = body else {
        return Ok(None);
    };
    // Edits are at most 3 varints of 10 bytes per MIN_COPY bytes of copy, plus the literals.
    let cap = h.run_len() * 2 + 64;
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .filter(|n| *n <= cap)
        .ok_or_else(|| Error::corrupt(what, "delta run edits: a frame without a sane size"))?;
    let raw = crate::blob::decompress(frame, size as usize)
        .map_err(|e| Error::corrupt(what, format!("delta run edits: zstd: {e}")))?;
    Edits::from_bytes(&raw, h.run_len(), h.prefix_len, what).map(Some)
}

/// How many edits a version 2 body holds (`None` for version 1, or a frame that does not
/// start with a count), read from the start of its frame alone.
pub fn edit_count(body: Body) -> Option<u64> {
    use std::io::Read;
    let Body::Edits(frame) = body else {
        return None;
    };
    let mut head = Vec::with_capacity(10);
    zstd::stream::read::Decoder::with_buffer(frame)
        .ok()?
        .take(10)
        .read_to_end(&mut head)
        .ok()?;
    varint(&mut &head[..])
}

/// Decodes a run's body against its prefix, given as consecutive pieces (joined only for a
/// version 1 frame, which needs them in one buffer); checks the length.
pub fn decode(body: Body, h: &RunHeader, prefix: &[Bytes], what: &str) -> Result<Vec<u8>> {
    let run_len = h.run_len();
    let have: usize = prefix.iter().map(|p| p.len()).sum();
    if have != h.prefix_len as usize {
        return Err(Error::corrupt(
            what,
            format!(
                "a prefix of {have} bytes where the run names {}",
                h.prefix_len
            ),
        ));
    }
    match edits(body, h, what)? {
        Some(e) => Ok(e.apply(prefix, run_len)),
        None => {
            let Body::Frame(frame) = body else {
                unreachable!("version 1")
            };
            let joined;
            let flat: &[u8] = match prefix {
                [one] => one,
                _ => {
                    joined = concat(prefix);
                    &joined
                }
            };
            decode_frame(frame, flat, run_len, what)
        }
    }
}

/// Splits a delta-run plaintext (compression byte first) into its header and zstd frame,
/// checking every bound before anything is allocated from it.
pub fn parse<'a>(plain: &'a [u8], what: &'a str) -> Result<(RunHeader, Body<'a>)> {
    let mut r = Reader::new(plain, what);
    if r.u8()? != DELTA {
        return Err(Error::corrupt(what, "not a delta run"));
    }
    let v = r.u8()?;
    if v != 1 && v != RUN_VERSION {
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
    Ok((
        h,
        if v == 1 {
            Body::Frame(frame)
        } else {
            Body::Edits(frame)
        },
    ))
}

/// Decompresses a version 1 frame against its prefix; checks the length.
fn decode_frame(frame: &[u8], prefix: &[u8], run_len: u64, what: &str) -> Result<Vec<u8>> {
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

    /// `old` with one byte changed every `step`.
    fn edited(old: &[u8], step: usize) -> Vec<u8> {
        let mut new = old.to_vec();
        for i in (0..new.len()).step_by(step) {
            new[i] = b'#';
        }
        new
    }

    /// `run` encoded against `prefix` at level 3, and its header.
    fn encoded(run: &[u8], prefix: &[u8]) -> (RunHeader, Vec<u8>) {
        let h = header(run, prefix);
        let enc = encode(&h, run, prefix, 0, 3).unwrap();
        (h, enc)
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
        let new = edited(&old, 50_000);
        let (h, enc) = encoded(&new, &old);
        assert!(
            enc.len() < 40_000,
            "a run with 42 changed bytes took {} bytes",
            enc.len()
        );
        let (h2, body) = parse(&enc, "t").unwrap();
        assert_eq!(h2, h);
        assert!(matches!(body, Body::Edits(_)));
        assert_eq!(decode(body, &h, &[old.clone().into()], "t").unwrap(), new);
        // The same prefix in pieces, split anywhere.
        let pieces: Vec<Bytes> = old.chunks(333_333).map(|c| c.to_vec().into()).collect();
        assert_eq!(decode(body, &h, &pieces, "t").unwrap(), new);
    }

    #[test]
    fn the_edit_count_is_read_from_the_start_of_the_frame() {
        let old = text(3, 1 << 20);
        let new = edited(&old, 300);
        let (h, enc) = encoded(&new, &old);
        let (_, body) = parse(&enc, "t").unwrap();
        let n = edits(body, &h, "t").unwrap().unwrap().edits.len() as u64;
        assert!(n > 3000, "{n} edits");
        assert_eq!(edit_count(body), Some(n));
        // A version 1 frame has no count, and a damaged one gives none.
        assert_eq!(edit_count(Body::Frame(body.bytes())), None);
        assert_eq!(edit_count(Body::Edits(b"not a zstd frame")), None);
    }

    #[test]
    fn anchors_are_found_block_by_block_as_one_by_one_and_the_first_end_wins() {
        // Lengths around the 64-end blocks, so every edge of a block is met.
        for n in [0, 31, 32, 33, 95, 96, 97, 1000, 4096 + 17] {
            let b = text(n as u64 + 7, n);
            let mut got = Vec::new();
            anchors(&b, |h, end| got.push((h, end)));
            let want: Vec<(u64, usize)> = (SPAN..=n)
                .filter(|&e| is_anchor(&b, e))
                .map(|e| (anchor_hash(&b, e), e))
                .collect();
            assert_eq!(got, want, "{n} bytes");
        }
        // The same 4 KiB three times: each anchor of the index is its first end.
        let block = text(3, 4096);
        let prefix = [&block[..], &block, &block].concat();
        let index = AnchorIndex::build(&prefix);
        let mut checked = 0;
        anchors(&block, |h, end| {
            assert_eq!(index.get(h), Some(end), "anchor ending at {end}");
            checked += 1;
        });
        assert!(checked > 64, "only {checked} anchors in 4 KiB");
    }

    #[test]
    fn wide_anchor_masks_are_the_scalar_ones() {
        // On a CPU without AVX-512 this compares the scalar path with itself.
        let b = text(31, 20_000);
        let zeros = [0u8; 200];
        let mut anchors_seen = 0;
        for buf in [&b[..], &zeros[..]] {
            // Up to the last end the wide path takes (`end + 63` the buffer's length).
            for end in 8..=buf.len() - 63 {
                let want = anchor_mask_scalar(buf, end, 64);
                anchors_seen += want.count_ones();
                assert_eq!(anchor_mask(buf, end, 64, wide_masks()), want, "end {end}");
            }
        }
        assert!(anchors_seen > 20_000 * 64 / 64, "{anchors_seen} anchors");
    }

    #[test]
    fn common_bytes_are_counted_from_either_end() {
        let a = text(5, 100);
        for cut in [0, 1, 7, 8, 9, 63, 64, 99] {
            let mut b = a.clone();
            b[cut] ^= 1;
            assert_eq!(common(&a, &b), cut);
            assert_eq!(common_back(&a, &b), 99 - cut);
            // Ends line up whatever the lengths.
            assert_eq!(common_back(&a[cut..], &a), 100 - cut);
        }
        assert_eq!(common_back(&[], &a), 0);
    }

    #[test]
    fn edits_find_moved_inserted_and_deleted_bytes() {
        let old = text(11, 300_000);
        let mut new = Vec::new();
        new.extend_from_slice(&old[200_000..250_000]); // moved to the front
        new.extend_from_slice(&old[..100_000]);
        new.extend_from_slice(b"a new row of text that was not there before");
        new.extend_from_slice(&old[100_100..200_000]); // 100 bytes deleted
        new.extend_from_slice(&text(12, 5_000)); // new bytes
        let e = Edits::find(&old, &new, 0);
        assert!(
            e.literals.len() < 6_000,
            "{} literal bytes",
            e.literals.len()
        );
        let bytes = e.to_bytes();
        let back = Edits::from_bytes(&bytes, new.len() as u64, old.len() as u32, "t").unwrap();
        assert_eq!(back, e);
        assert_eq!(e.apply(&[old.clone().into()], new.len() as u64), new);
    }

    /// The bytes of a composition made only of buffers.
    fn materialise(c: &Composed, from: u64, len: u64, chunks: &[(BlobId, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (src, at, n) in c.range(from, len) {
            let b: &[u8] = match src {
                Src::Bytes(b) => b,
                Src::Chunk(id) => &chunks.iter().find(|(c, _)| c == id).expect("known").1,
            };
            out.extend_from_slice(&b[at..at + n as usize]);
        }
        out
    }

    #[test]
    fn a_chain_composes_to_what_decoding_each_level_gives() {
        // Three versions; each level's prefix is the last one's bytes cut in two pieces.
        let v0 = text(21, 400_000);
        let mut v1 = v0.clone();
        v1[1_000..1_040].copy_from_slice(&text(22, 40));
        v1.splice(200_000..200_000, text(23, 300));
        let mut v2 = v1.clone();
        v2.drain(50_000..50_500);
        v2[300_000..300_020].copy_from_slice(&text(24, 20));
        let e1 = Edits::find(&v0, &v1, 0);
        let e2 = Edits::find(&v1, &v2, 0);
        let half = v0.len() / 2;
        let pieces0: Vec<Bytes> = vec![v0[..half].to_vec().into(), v0[half..].to_vec().into()];
        // The first half of the oldest version is a plain chunk, the second a buffer.
        let chunk = BlobId([7; 32]);
        let chunks = vec![(chunk, v0[..half].to_vec())];
        let second = std::sync::Arc::new(Composed::whole(std::sync::Arc::new(v0[half..].to_vec())));
        let mut pp0 = Prefix::default();
        pp0.push(Part::Chunk(chunk, 0, half as u32));
        pp0.push(Part::Lower(second.clone(), 0, second.len()));
        let c1 = std::sync::Arc::new(Composed::apply(e1.clone(), &pp0));
        assert_eq!(c1.len(), v1.len() as u64);
        let m1 = materialise(&c1, 0, c1.len(), &chunks);
        assert_eq!(m1, e1.apply(&pieces0, v1.len() as u64));
        assert_eq!(m1, v1);
        // The next level reads its prefix out of the composed one, in slices (so its chunk
        // and buffers are named anew in the level above).
        let mut p1 = Prefix::default();
        p1.push(Part::Lower(c1.clone(), 0, 123_457));
        p1.push(Part::Lower(c1.clone(), 123_457, v1.len() as u64 - 123_457));
        let c2 = Composed::apply(e2.clone(), &p1);
        assert_eq!(materialise(&c2, 0, c2.len(), &chunks), v2);
        // Only edits add stretches: far fewer than bytes. The plain chunk is named once
        // at each level, however many stretches read it.
        assert!(c2.stretches() < 40, "{} stretches", c2.stretches());
        assert!(c1.segs.iter().filter(|s| s.src & BUF == 0).count() > 1);
        assert_eq!(c1.chunks, vec![chunk]);
        assert_eq!(c2.chunks, vec![chunk]);
        assert_eq!(
            materialise(&c2, 199_990, 400, &chunks),
            v2[199_990..200_390]
        );
    }

    #[test]
    fn a_stretch_is_found_through_the_table_as_by_halving() {
        // Stretches of 1 to 4096 bytes (so table entries hold none, one or many), and of
        // 1 to 64 (entries of 256 bytes hold dozens).
        for top in [52u32, 58] {
            let mut c = Composed::default();
            let mut seed = 7u64;
            for i in 0..3000u32 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = 1 + (seed >> top) as u32;
                // Sources alternate, so no two stretches merge.
                c.push(Seg {
                    len,
                    src: (i % 2) | BUF,
                    at: 0,
                });
            }
            assert_eq!(c.stretches(), 3000);
            for from in (0..c.len())
                .step_by(7)
                .chain([c.len() - 1, c.len(), c.len() + 9])
            {
                let want = c.starts.partition_point(|s| *s <= from) - 1;
                assert_eq!(c.seg_at(from), want, "byte {from} of {}", c.len());
            }
        }
        assert_eq!(Composed::default().seg_at(5), 0);
    }

    #[test]
    fn hostile_edit_lists_are_refused() {
        let old = text(13, 10_000);
        let new = text(14, 10_000);
        let e = Edits::find(&old, &old, 0);
        let ok = e.to_bytes();
        assert!(Edits::from_bytes(&ok, 10_000, 10_000, "t").is_ok());
        // A prefix too short for the copies, a run of another length.
        assert!(Edits::from_bytes(&ok, 10_000, 9_999, "t").is_err());
        assert!(Edits::from_bytes(&ok, 10_001, 10_000, "t").is_err());
        let mut far = Vec::new();
        put_varint(&mut far, 1);
        put_varint(&mut far, 0);
        put_varint(&mut far, 20);
        put_varint(&mut far, (u32::MAX as u64) << 1);
        assert!(Edits::from_bytes(&far, 20, 10_000, "t").is_err());
        let short = Edits {
            edits: vec![Edit {
                lit: 0,
                from: 0,
                len: 3,
            }],
            literals: vec![],
        };
        assert!(Edits::from_bytes(&short.to_bytes(), 3, 10_000, "t").is_err());
        let all_new = Edits::find(&old, &new, 0);
        for cut in 0..all_new.to_bytes().len().min(50) {
            assert!(Edits::from_bytes(&all_new.to_bytes()[..cut], 10_000, 10_000, "t").is_err());
        }
        for b in [0u8, 0x80, 0xff] {
            let _ = Edits::from_bytes(&[b; 64], 10_000, 10_000, "t");
        }
        // Found by the fuzzer: a length near 2^64 overflowed the bound check.
        let mut huge = Vec::new();
        put_varint(&mut huge, 1);
        put_varint(&mut huge, 0);
        put_varint(&mut huge, u64::MAX - 3);
        put_varint(&mut huge, 0);
        assert!(Edits::from_bytes(&huge, 10_000, 10_000, "t").is_err());
    }

    #[test]
    fn the_wrong_prefix_or_length_fails_and_never_panics() {
        let old = text(1, 100_000);
        let mut new = old.clone();
        new[50_000..50_100].copy_from_slice(&text(2, 100));
        let (h, enc) = encoded(&new, &old);
        let (_, body) = parse(&enc, "t").unwrap();
        let other = text(3, 100_000);
        if let Ok(d) = decode(body, &h, &[other.into()], "t") {
            assert_ne!(d, new);
        }
        let mut shorter = h.clone();
        shorter.members[0].1 -= 1;
        assert!(decode(body, &shorter, &[old.clone().into()], "t").is_err());
        for cut in [0, 1, 3, 20, enc.len() / 2, enc.len() - 1] {
            let _ = parse(&enc[..cut], "t")
                .and_then(|(h, f)| decode(f, &h, &[old.clone().into()], "t"));
        }
    }

    #[test]
    fn headers_out_of_bounds_are_refused() {
        let run = text(4, 1000);
        let prefix = text(5, 1000);
        let mut h = header(&run, &prefix);
        h.skip = 11;
        assert!(encode(&h, &run, &prefix, 0, 3).is_err());
        let mut h = header(&run, &prefix);
        h.depth = 0;
        assert!(encode(&h, &run, &prefix, 0, 3).is_err());
        let good = encode(&header(&run, &prefix), &run, &prefix, 0, 3).unwrap();
        let mut bad = good.clone();
        bad[3..7].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&bad, "t").is_err());
    }
}
