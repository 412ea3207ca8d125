//! What each stage of a backup and a restore costs per byte here, one core: the hardware
//! limits the end-to-end comparison (`bench/compare.sh`) is read against. Run with
//! `cargo bench -p cairn-store --bench stages`; `CAIRN_BENCH_INDEX_SIZES=10000,10000000`
//! (the default) sets the index sizes the lookups and inserts are measured at.

use std::hint::black_box;

use cairn_store::blob::{self, BlobKind};
use cairn_store::chunker::{Chunker, ChunkerParams};
use cairn_store::crypto::{Keys, MasterKey};
use cairn_store::id::{BlobId, PackId};
use cairn_store::index::Index;
use cairn_store::pack::Entry;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// A dump-like text: INSERT rows of numbers and words, about 6:1 under zstd -3 (as the
/// shared corpus's dumps are).
fn dump_like(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 200);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let words = [
        "customer", "order", "pending", "shipped", "region", "note", "plan",
    ];
    let mut i = 0u64;
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = words[(x % 7) as usize];
        out.extend_from_slice(
            format!(
                "INSERT INTO t VALUES ({i},'{w}-{}',{},'{}');\n",
                x % 10_007,
                (x >> 20) % 100_000,
                words[((x >> 40) % 7) as usize]
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

const PIECE: usize = 1 << 20;

fn stages(c: &mut Criterion) {
    let keys = Keys::derive(&MasterKey::generate());
    let data = dump_like(32 << 20);
    let mut g = c.benchmark_group("stage");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let chunker = Chunker::new(keys.gear_table(), ChunkerParams::STREAM).expect("params");
    g.bench_function("chunk: FastCDC cut points (stream chunks)", |b| {
        b.iter(|| black_box(chunker.cut_slice(&data)))
    });
    g.bench_function("hash: keyed BLAKE3, 1 MiB pieces", |b| {
        b.iter(|| {
            for p in data.chunks(PIECE) {
                black_box(keys.chunk_id(p));
            }
        })
    });
    g.bench_function("compress: zstd -3, 1 MiB pieces", |b| {
        b.iter(|| {
            for p in data.chunks(PIECE) {
                black_box(blob::encode(p, 3));
            }
        })
    });
    let encoded: Vec<(BlobId, Vec<u8>, u32)> = data
        .chunks(PIECE)
        .map(|p| (keys.chunk_id(p), blob::encode(p, 3), p.len() as u32))
        .collect();
    let stored: usize = encoded.iter().map(|(_, e, _)| e.len()).sum();
    let okey = keys.object_key(&[7; cairn_store::crypto::SALT_LEN]);
    // Sealing and decompressing work on the compressed bytes, but are counted per input byte
    // like the other stages, so the rows add up to a pipeline's cost.
    g.bench_function("seal: AES-256-GCM of the compressed pieces", |b| {
        b.iter(|| {
            for (i, (id, e, _)) in encoded.iter().enumerate() {
                black_box(blob::seal(&okey, i as u32, id, BlobKind::Data, e));
            }
        })
    });
    g.bench_function("decompress: zstd, 1 MiB pieces", |b| {
        b.iter(|| {
            for (id, e, len) in &encoded {
                black_box(blob::decode(e, id, *len, "bench").expect("decodes"));
            }
        })
    });
    g.finish();
    eprintln!(
        "(zstd -3 made {} MB of {} MB: {:.1}:1)",
        stored / 1_000_000,
        data.len() / 1_000_000,
        data.len() as f64 / stored as f64
    );
}

/// A pseudo-random 32-byte id from `n`.
fn id_of(n: u64, salt: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    for w in out.chunks_mut(8) {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        w.copy_from_slice(&x.to_le_bytes());
    }
    out
}

/// Index entries for one pack of `n` blobs, numbered from `first`.
fn pack_entries(first: u64, n: u64) -> Vec<Entry> {
    (first..first + n)
        .map(|k| Entry {
            id: BlobId(id_of(k, 1)),
            kind: BlobKind::Data,
            offset: (k - first) * 40_000,
            stored_len: 40_000,
            raw_len: 64_000,
        })
        .collect()
}

fn index(c: &mut Criterion) {
    let sizes: Vec<u64> = std::env::var("CAIRN_BENCH_INDEX_SIZES")
        .unwrap_or_else(|_| "10000,10000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("CAIRN_BENCH_INDEX_SIZES: numbers"))
        .collect();
    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        Index::create(dir.path()).expect("create");
        let ix = Index::open(dir.path()).expect("open");
        // Packs of 1,000 blobs, as a backup of 64 GB in 64 KiB chunks would index them.
        let t = std::time::Instant::now();
        let mut k = 0;
        while k < n {
            let m = 1000.min(n - k);
            ix.add_pack(&PackId(id_of(k, 2)), m * 40_000, &pack_entries(k, m))
                .expect("add");
            k += m;
        }
        eprintln!(
            "(index of {n} blobs built in {:.1} s: {:.2} µs a blob)",
            t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        );
        g.throughput(Throughput::Elements(1000));
        let mut probe = 0u64;
        g.bench_with_input(
            BenchmarkId::new("1,000 lookups of indexed blobs", n),
            &n,
            |b, &n| {
                b.iter(|| {
                    for _ in 0..1000 {
                        probe = (probe + 7_919) % n;
                        black_box(ix.get(&BlobId(id_of(probe, 1))).expect("get"));
                    }
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("1,000 lookups of new blobs", n),
            &n,
            |b, _| {
                b.iter(|| {
                    for _ in 0..1000 {
                        probe += 1;
                        black_box(ix.contains(&BlobId(id_of(probe, 3))).expect("get"));
                    }
                })
            },
        );
        let mut next = n;
        g.bench_with_input(
            BenchmarkId::new("insert a pack of 1,000 blobs (the index grows by each)", n),
            &n,
            |b, _| {
                b.iter(|| {
                    ix.add_pack(
                        &PackId(id_of(next, 2)),
                        40_000_000,
                        &pack_entries(next, 1000),
                    )
                    .expect("add");
                    next += 1000;
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, stages, index);
criterion_main!(benches);
