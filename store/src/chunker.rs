//! Content-defined chunking with a keyed gear table. Spec: `format-spec/03-chunking.md`.
//!
//! The cut-point search is fastcdc's v2020 algorithm (`fastcdc::v2020::cut_gear`, pinned at
//! exactly 5.0.0 because cut points are part of the format), but the gear table is derived from
//! the repository key instead of the crate's public table: with a public table, chunk lengths
//! alone fingerprint known files. This module does no I/O beyond the `Read` it is handed.

use std::io::Read;

use fastcdc::v2020::{Normalization, cut_gear, select_masks};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Chunk size bounds, recorded per source kind in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// No chunk is smaller, except the last one of a file.
    pub min: u32,
    /// The average the cut-point masks aim at.
    pub avg: u32,
    /// No chunk is larger.
    pub max: u32,
}

impl ChunkerParams {
    /// Files in directory trees: uploads and settings change rarely, so large chunks keep
    /// the index small.
    pub const TREE: Self = Self {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
    };
    /// Dump streams without delta runs: a new dump differs from the last in scattered rows,
    /// so smaller chunks keep what each revision adds small.
    pub const STREAM: Self = Self {
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
    };
    /// Dump streams with delta runs (new repositories): scattered changes touch nearly every
    /// chunk whatever its size, and runs store only what changed, so larger chunks cost less:
    /// fewer ids in run headers and in the index. Measured on a 160 MB MariaDB dump between
    /// sysbench bursts, a revision added 871 KB at 64 KiB, 755 KB at 128 KiB and 702 KB at
    /// 256 KiB (the patch-from floor: about 510 KB); on the shared corpus 1.92, 1.81 and 1.83 MB.
    pub const STREAM_DELTA: Self = Self {
        min: 64 * 1024,
        avg: 256 * 1024,
        max: 1024 * 1024,
    };

    /// Refuses parameters fastcdc cannot honour (odd sizes are silently wrong in release).
    pub fn validate(&self) -> Result<()> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (fastcdc::v2020::MINIMUM_MIN..=fastcdc::v2020::MINIMUM_MAX).contains(&min)
            && (fastcdc::v2020::AVERAGE_MIN..=fastcdc::v2020::AVERAGE_MAX).contains(&avg)
            && (fastcdc::v2020::MAXIMUM_MIN..=fastcdc::v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "unsupported chunker parameters {self:?}"
            )))
        }
    }
}

/// A chunker: keyed gear tables plus size bounds. Cheap to clone.
#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    params: ChunkerParams,
    masks: (u64, u64, u64, u64),
}

impl Chunker {
    /// A chunker over `gear` (from [`crate::crypto::Keys::gear_table`]) with `params`.
    pub fn new(gear: [u64; 256], params: ChunkerParams) -> Result<Self> {
        params.validate()?;
        let mut gear_ls = [0u64; 256];
        for (d, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *d = g << 1;
        }
        let (mask_s, mask_l) = select_masks(params.avg as usize, Normalization::Level1);
        Ok(Self {
            gear: Box::new(gear),
            gear_ls: Box::new(gear_ls),
            params,
            masks: (mask_s, mask_l, mask_s << 1, mask_l << 1),
        })
    }

    /// The size bounds.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the first chunk of `data`, which must either hold at least `max` bytes or be
    /// the end of the input.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        let (s, l, sls, lls) = self.masks;
        let p = self.params;
        let (_, len) = cut_gear(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            s,
            l,
            sls,
            lls,
            &self.gear[..],
            &self.gear_ls[..],
        );
        len.max(1).min(data.len())
    }

    /// Cut points of a whole slice, as chunk lengths.
    pub fn cut_slice(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let n = self.next_cut(data);
            out.push(n);
            data = &data[n..];
        }
        out
    }

    /// A streaming chunker over `reader`; never holds more than twice `max` bytes.
    pub fn stream<R: Read>(&self, reader: R) -> ChunkStream<'_, R> {
        ChunkStream {
            chunker: self,
            reader,
            buf: Vec::new(),
            start: 0,
            eof: false,
        }
    }
}

/// Chunks of a `Read`, in order; yields owned buffers.
pub struct ChunkStream<'a, R> {
    chunker: &'a Chunker,
    reader: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
}

impl<R: Read> ChunkStream<'_, R> {
    /// The next chunk, or `None` at the end of the input.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let max = self.chunker.params.max as usize;
        if self.buf.len() - self.start < max && !self.eof {
            self.buf.drain(..self.start);
            self.start = 0;
            // Read into the buffer's spare room, grown as the bytes come: zero-filling two
            // `max` (8 MiB for trees) before each read was a third of the CPU of a first
            // backup of a tree of small files.
            let want = (2 * max - self.buf.len()) as u64;
            let got = (&mut self.reader).take(want).read_to_end(&mut self.buf)?;
            if (got as u64) < want {
                self.eof = true;
            }
        }
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return Ok(None);
        }
        let n = self.chunker.next_cut(rest);
        let chunk = rest[..n].to_vec();
        self.start += n;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_chunker(params: ChunkerParams) -> Chunker {
        let keys = crate::crypto::Keys::derive(&crate::crypto::MasterKey::from_bytes([7; 32]));
        Chunker::new(keys.gear_table(), params).unwrap()
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; n];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// A reader that returns at most `step` bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn stream_and_slice_cut_points_agree() {
        let c = test_chunker(ChunkerParams::STREAM);
        let data = pseudo_random(3 * 1024 * 1024 + 17, 1);
        let slice = c.cut_slice(&data);
        for step in [1000, 65_536, 1 << 20] {
            let mut s = c.stream(Trickle(&data, step));
            let mut lens = Vec::new();
            let mut joined = Vec::new();
            while let Some(ch) = s.next_chunk().unwrap() {
                lens.push(ch.len());
                joined.extend_from_slice(&ch);
            }
            assert_eq!(lens, slice, "step {step}");
            assert_eq!(joined, data);
        }
    }

    #[test]
    fn chunk_sizes_respect_bounds() {
        let p = ChunkerParams::STREAM;
        let c = test_chunker(p);
        let data = pseudo_random(4 * 1024 * 1024, 2);
        let lens = c.cut_slice(&data);
        let (last, body) = lens.split_last().unwrap();
        assert!(
            body.iter()
                .all(|&n| n >= p.min as usize && n <= p.max as usize)
        );
        assert!(*last <= p.max as usize);
        let avg = data.len() / lens.len();
        assert!(avg > 32 * 1024 && avg < 128 * 1024, "average {avg}");
    }

    #[test]
    fn different_keys_cut_differently() {
        let a = test_chunker(ChunkerParams::STREAM);
        let keys = crate::crypto::Keys::derive(&crate::crypto::MasterKey::from_bytes([8; 32]));
        let b = Chunker::new(keys.gear_table(), ChunkerParams::STREAM).unwrap();
        let data = pseudo_random(2 * 1024 * 1024, 3);
        assert_ne!(a.cut_slice(&data), b.cut_slice(&data));
    }

    #[test]
    fn odd_sizes_are_refused() {
        let keys = crate::crypto::Keys::derive(&crate::crypto::MasterKey::from_bytes([7; 32]));
        let bad = ChunkerParams {
            min: 1025,
            avg: 4096,
            max: 8192,
        };
        assert!(Chunker::new(keys.gear_table(), bad).is_err());
    }
}
