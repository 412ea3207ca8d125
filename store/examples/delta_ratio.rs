//! Measures what storing a new version of a dump costs: chunk deduplication alone, and
//! deduplication plus delta runs (`delta.rs`) against the previous version. Compare with
//! `zstd -19 --long=28 --patch-from=OLD NEW` of the same pair (the floor).
//!
//! ```sh
//! cargo run --release -p cairn-store --example delta_ratio -- OLD NEW [AVG_KIB] [RUN_MIB] [SLACK_KIB] [LEVEL]
//! ```

use std::collections::HashMap;
use std::time::Instant;

use cairn_store::chunker::{Chunker, ChunkerParams};
use cairn_store::crypto::{Keys, MasterKey};
use cairn_store::delta::{self, RunHeader};
use cairn_store::id::BlobId;

struct Chunk {
    off: u64,
    id: BlobId,
    len: u32,
}

fn chunks(keys: &Keys, chunker: &Chunker, data: &[u8]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut off = 0usize;
    for cut in chunker.cut_slice(data) {
        let c = &data[off..off + cut];
        out.push(Chunk {
            off: off as u64,
            id: keys.chunk_id(c),
            len: cut as u32,
        });
        off += cut;
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: delta_ratio OLD NEW [AVG_KIB] [RUN_MIB] [SLACK_KIB] [LEVEL]");
        std::process::exit(2);
    }
    let old = std::fs::read(&args[1]).unwrap();
    let new = std::fs::read(&args[2]).unwrap();
    let avg: u32 = args.get(3).map_or(64, |a| a.parse().unwrap()) << 10;
    let run_max: usize = args.get(4).map_or(4, |a| a.parse().unwrap()) << 20;
    let slack: u64 = args.get(5).map_or(256, |a| a.parse().unwrap()) << 10;
    let level: i32 = args.get(6).map_or(3, |a| a.parse().unwrap());
    let keys = Keys::derive(&MasterKey::from_bytes([7; 32]));
    let params = ChunkerParams {
        min: avg / 4,
        avg,
        max: avg * 4,
    };
    let chunker = Chunker::new(keys.gear_table(), params).unwrap();
    let t = Instant::now();
    let oc = chunks(&keys, &chunker, &old);
    let nc = chunks(&keys, &chunker, &new);
    let chunk_time = t.elapsed();
    let where_old: HashMap<BlobId, usize> = oc.iter().enumerate().map(|(i, c)| (c.id, i)).collect();

    // Dedup alone: every chunk not in the old version, compressed on its own.
    let t = Instant::now();
    let mut dedup_only = 0u64;
    let mut new_bytes = 0u64;
    for c in &nc {
        if !where_old.contains_key(&c.id) {
            let d = &new[c.off as usize..c.off as usize + c.len as usize];
            dedup_only += zstd::bulk::compress(d, 3).unwrap().len() as u64 + 1 + 16;
            new_bytes += c.len as u64;
        }
    }
    let dedup_time = t.elapsed();

    // Dedup plus delta runs.
    let t = Instant::now();
    let mut stored = 0u64;
    let mut runs = 0u64;
    // (new offset, old offset) of the last deduplicated chunk: predicts where a run's
    // matching stretch is in the old version.
    let mut anchor = (0u64, 0u64);
    let mut run: Vec<&Chunk> = Vec::new();
    let mut encoded: Vec<(Vec<u8>, u64, u64, u64)> = Vec::new();
    let mut runs_at: Vec<u64> = Vec::new();
    let mut flush = |run: &mut Vec<&Chunk>, anchor: (u64, u64)| {
        if run.is_empty() {
            return;
        }
        let start = run[0].off;
        let end = run.last().map(|c| c.off + c.len as u64).unwrap();
        let pred = (anchor.1 + (start - anchor.0)).min(old.len() as u64);
        let lo = pred.saturating_sub(slack);
        let hi = (pred + (end - start) + slack).min(old.len() as u64);
        // The old chunks covering [lo, hi).
        let first = oc.partition_point(|c| c.off + c.len as u64 <= lo);
        let last = oc.partition_point(|c| c.off < hi);
        let bases: Vec<(BlobId, u32)> = oc[first..last.max(first + 1).min(oc.len())]
            .iter()
            .map(|c| (c.id, c.len))
            .collect();
        let base_start = oc[first].off;
        let h = RunHeader {
            depth: 1,
            members: run.iter().map(|c| (c.id, c.len)).collect(),
            bases,
            skip: (lo - base_start) as u32,
            prefix_len: (hi - lo) as u32,
        };
        let bytes = &new[start as usize..end as usize];
        let enc = delta::encode(
            &h,
            bytes,
            &old[lo as usize..hi as usize],
            (pred - lo) as usize,
            level,
        )
        .unwrap();
        stored += enc.len() as u64 + 16;
        runs += 1;
        encoded.push((enc, lo, hi, h.run_len()));
        runs_at.push(start);
        run.clear();
    };
    for c in &nc {
        match where_old.get(&c.id) {
            Some(&i) => {
                flush(&mut run, anchor);
                anchor = (c.off + c.len as u64, oc[i].off + oc[i].len as u64);
            }
            None => {
                let len: u64 = run.iter().map(|c| c.len as u64).sum();
                if len + c.len as u64 > run_max as u64 {
                    flush(&mut run, anchor);
                }
                run.push(c);
            }
        }
    }
    flush(&mut run, anchor);
    let delta_time = t.elapsed();
    // Decoding every run against its prefix: a restore's work per level of a chain.
    let t = Instant::now();
    let mut decoded = 0u64;
    for (i, (enc, lo, hi, len)) in encoded.iter().enumerate() {
        let (h, body) = delta::parse(enc, "run").unwrap();
        let prefix = old[*lo as usize..*hi as usize].to_vec().into();
        let run = delta::decode(body, &h, &[prefix], "run").unwrap();
        let at = runs_at[i] as usize;
        assert!(
            run[..] == new[at..at + *len as usize],
            "run {i} decodes wrong"
        );
        decoded += run.len() as u64;
    }
    let decode_time = t.elapsed();
    println!(
        "old {} MB, new {} MB; avg chunk {} KiB, runs up to {} MiB, slack {} KiB, zstd level {level}",
        old.len() >> 20,
        new.len() >> 20,
        avg >> 10,
        run_max >> 20,
        slack >> 10
    );
    println!(
        "chunks: old {}, new {}; new chunks {} ({:.1} MB, {:.0}% of the new version); chunking+hashing both {:.2} s",
        oc.len(),
        nc.len(),
        nc.iter().filter(|c| !where_old.contains_key(&c.id)).count(),
        new_bytes as f64 / 1e6,
        100.0 * new_bytes as f64 / new.len() as f64,
        chunk_time.as_secs_f64()
    );
    println!(
        "dedup alone:      {:>12} bytes ({:.2} s to compress)",
        dedup_only,
        dedup_time.as_secs_f64()
    );
    println!(
        "dedup + deltas:   {:>12} bytes in {runs} runs ({:.2} s to compress)",
        stored,
        delta_time.as_secs_f64()
    );
    println!(
        "decoding the runs: {:.1} MB in {:.3} s ({:.0} MB/s)",
        decoded as f64 / 1e6,
        decode_time.as_secs_f64(),
        decoded as f64 / 1e6 / decode_time.as_secs_f64()
    );
}
