//! The format test vectors in `format-spec/vectors/`: this build must reproduce every success
//! vector byte for byte and reject every failure vector for the stated reason.
//!
//! The vector files are the reference, not this code: a change that breaks a vector changes
//! the on-disk format and needs a format version bump (`format-spec/README.md`). The
//! `regenerated_vectors_match_committed_files` test below regenerates every vector and
//! compares it with the committed file byte for byte; it writes into the vector directory
//! only when `CAIRN_WRITE_VECTORS` names it, so the committed files are never overwritten by
//! accident.
//!
//! Uses only the crate's public API and modules that build without the `rocksdb` feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_store::blob::{self, BlobKind};
use cairn_store::chunker::{Chunker, ChunkerParams};
use cairn_store::config::{Config, KdfParams};
use cairn_store::crypto::{Keys, MasterKey, ObjectKey};
use cairn_store::envelope::{self, HEADER_LEN, Header, Magic};
use cairn_store::events::{self, Event, Kind};
use cairn_store::keyfile;
use cairn_store::pack::{self, PackBuilder};
use cairn_store::snapshot::{Snapshot, Summary};
use cairn_store::tree::{Entry, Node, Part, Tree};
use cairn_store::{BlobId, Error, PackId, SnapshotId};

/// Every vector the suite must find: deleting one is a failure, not a silent pass.
const REQUIRED: &[&str] = &[
    "derive-keys.txt",
    "chunk-id.txt",
    "tree-id.txt",
    "label-hash.txt",
    "gear-table.txt",
    "chunk-cuts-tree.txt",
    "chunk-cuts-tree-8mib.txt",
    "chunk-cuts-stream.txt",
    "sealed-config.txt",
    "sealed-snapshot.txt",
    "sealed-lock.txt",
    "sealed-event.txt",
    "sealed-prune.txt",
    "sealed-newer-version.txt",
    "pack.txt",
    "pack-flipped-blob.txt",
    "pack-flipped-table.txt",
    "pack-flipped-salt.txt",
    "pack-table-unknown-kind.txt",
    "tree.txt",
    "tree-truncated.txt",
    "tree-unknown-part.txt",
    "delta-run.txt",
    "delta-run-edits.txt",
    "keyfile.txt",
    "keyfile-generations.txt",
    "sealed-generation.txt",
    "keyfile-flipped-tag.txt",
    "keyfile-newer-version.txt",
    "keyfile-kdf-bounds.txt",
];

// ---------------------------------------------------------------------------------------------
// Vector files
// ---------------------------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../format-spec/vectors")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Success,
    Failure(String),
}

/// One parsed vector file.
struct Vector {
    name: String,
    expect: Expect,
    kind: String,
    fields: BTreeMap<String, String>,
}

impl Vector {
    fn parse(name: &str, text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let expect = match lines.next().and_then(|l| l.strip_prefix("expect: ")) {
            Some("success") => Expect::Success,
            Some(f) => match f.strip_prefix("failure ") {
                Some(why) if !why.is_empty() => Expect::Failure(why.to_string()),
                _ => return Err(format!("bad expect line {f:?}")),
            },
            None => return Err("the first line must be `expect: ...`".into()),
        };
        let kind = lines
            .next()
            .and_then(|l| l.strip_prefix("type: "))
            .ok_or("the second line must be `type: ...`")?
            .to_string();
        let mut fields = BTreeMap::new();
        for line in lines {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("not a `key: value` line: {line:?}"))?;
            let v = v.strip_prefix(' ').unwrap_or(v);
            if k == "comment" {
                continue;
            }
            if fields.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("key {k:?} appears twice"));
            }
        }
        Ok(Self {
            name: name.to_string(),
            expect,
            kind,
            fields,
        })
    }

    fn str(&self, k: &str) -> Result<&str, String> {
        self.fields
            .get(k)
            .map(String::as_str)
            .ok_or_else(|| format!("missing key {k:?}"))
    }
    fn hex(&self, k: &str) -> Result<Vec<u8>, String> {
        hex::decode(self.str(k)?).map_err(|e| format!("{k}: {e}"))
    }
    fn arr<const N: usize>(&self, k: &str) -> Result<[u8; N], String> {
        self.hex(k)?
            .try_into()
            .map_err(|v: Vec<u8>| format!("{k}: {} bytes, expected {N}", v.len()))
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<T, String> {
        self.str(k)?
            .parse()
            .map_err(|_| format!("{k}: not a decimal number"))
    }
    /// Generation keys (concatenated 32-byte keys, generations 1, 2, ...), if the vector
    /// has any.
    fn generations(&self) -> Result<Vec<MasterKey>, String> {
        if !self.fields.contains_key("generation-keys") {
            return Ok(Vec::new());
        }
        let all = self.hex("generation-keys")?;
        ensure(all.len() % 32 == 0 && !all.is_empty(), || {
            "generation-keys: not a list of 32-byte keys".into()
        })?;
        Ok(all
            .chunks(32)
            .map(|c| MasterKey::from_bytes(c.try_into().expect("32")))
            .collect())
    }
    fn keys(&self) -> Result<Keys, String> {
        Ok(Keys::derive_with(
            &MasterKey::from_bytes(self.arr("master")?),
            &self.generations()?,
        ))
    }
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn eq_hex(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    ensure(got == want, || {
        format!(
            "{what} differs:\n   got {}\n  want {}",
            hex::encode(got),
            hex::encode(want)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Shared inputs (the generator and the checks agree on these)
// ---------------------------------------------------------------------------------------------

const CONTEXTS: [(&str, &str); 6] = [
    ("chunk-id-key", "cairn 2026 chunk id"),
    ("tree-id-key", "cairn 2026 tree id"),
    ("run-id-key", "cairn 2026 run id"),
    ("label-key", "cairn 2026 label"),
    ("seal-key", "cairn 2026 seal"),
    ("gear-key", "cairn 2026 gear"),
];

/// The pseudo-random chunker input: the first `len` bytes of BLAKE3's XOF of `seed`.
fn xof_input(seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn magic_of(bytes: &[u8]) -> Result<Magic, String> {
    [
        Magic::Config,
        Magic::Snapshot,
        Magic::Pack,
        Magic::Lock,
        Magic::Event,
        Magic::Prune,
    ]
    .into_iter()
    .find(|m| m.bytes().as_slice() == bytes)
    .ok_or_else(|| format!("unknown magic {}", hex::encode(bytes)))
}

fn kind_of(v: u8) -> Result<BlobKind, String> {
    BlobKind::from_u8(v, "vector").map_err(|e| e.to_string())
}

/// The subdirectory of the tree vector: one empty file.
fn sample_subtree() -> Tree {
    Tree {
        entries: vec![Entry {
            name: b"x".to_vec(),
            node: Node::File(Vec::new()),
            mode: 0o100600,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 7,
            size: 0,
            xattrs: Vec::new(),
        }],
    }
}

/// The tree vector: one entry of every node kind, sorted by name.
fn sample_tree(keys: &Keys) -> Tree {
    let t = 1_700_000_000_123_456_789i64;
    let e = |name: &[u8], node: Node, mode: u32, size: u64, ino: u64| Entry {
        name: name.to_vec(),
        node,
        mode,
        uid: 1000,
        gid: 100,
        mtime_ns: t,
        ctime_ns: t + 1,
        ino,
        size,
        xattrs: Vec::new(),
    };
    let mut file = e(
        b"a.txt",
        Node::File(vec![
            Part {
                kind: 0,
                id: keys.chunk_id(b"hello "),
                len: 6,
            },
            Part {
                kind: 0,
                id: keys.chunk_id(b"world\n"),
                len: 6,
            },
        ]),
        0o100644,
        12,
        42,
    );
    file.xattrs = vec![
        (b"user.comment".to_vec(), b"hi".to_vec()),
        (b"user.empty".to_vec(), Vec::new()),
    ];
    let mut fifo = e(b"g", Node::Fifo, 0o010644, 0, 48);
    fifo.mtime_ns = -1_500_000_000;
    fifo.ctime_ns = -1;
    Tree {
        entries: vec![
            file,
            e(
                b"b",
                Node::Dir(keys.tree_id(&sample_subtree().encode())),
                0o040755,
                0,
                43,
            ),
            e(b"c-\xff", Node::Symlink(b"a.txt".to_vec()), 0o120777, 0, 44),
            e(
                b"d",
                Node::HardLink(vec![b"b".to_vec(), b"x".to_vec()]),
                0o100600,
                0,
                7,
            ),
            e(b"e", Node::CharDevice(0x0501), 0o020620, 0, 45),
            e(b"f", Node::BlockDevice(0x0800), 0o060660, 0, 46),
            fifo,
        ],
    }
}

fn sample_config() -> Config {
    Config {
        version: 1,
        id: "00112233445566778899aabbccddeeff".into(),
        chunker_tree: ChunkerParams::TREE,
        chunker_stream: ChunkerParams::STREAM,
        zstd_level: 3,
        pack_size: 16 * 1024 * 1024,
        // Pinned, not the default: the committed vectors do not follow a change of default.
        kdf: KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        },
        delta: None,
    }
}

fn sample_snapshot(tree: BlobId) -> Snapshot {
    Snapshot {
        version: 1,
        time_ns: 1_700_000_000_000_000_000,
        hostname: "host".into(),
        username: "user".into(),
        paths: vec!["/srv/www".into()],
        tree,
        service: Some("www".into()),
        revision: Some("v1.2.3".into()),
        tags: vec!["nightly".into()],
        parent: None,
        summary: Summary {
            files: 2,
            dirs: 1,
            others: 5,
            bytes: 12,
            new_blobs: 4,
            new_raw_bytes: 300,
            added_bytes: 400,
            skipped: 0,
            unchanged_files: 0,
            duration_ms: 5,
        },
    }
}

const LOCK_JSON: &str = r#"{"host":"host","pid":4242,"time_ns":1700000000000000000,"exclusive":false,"command":"backup"}"#;

/// The id of the snapshot vector: BLAKE3 of `sample_snapshot` sealed under salt 80..9f.
fn sample_snapshot_id(keys: &Keys) -> SnapshotId {
    let tree = keys.tree_id(&sample_tree(keys).encode());
    let header = Header {
        magic: Magic::Snapshot,
        version: 1,
        key_gen: 0,
        salt: seq32(0x80),
    };
    let json = serde_json::to_vec(&sample_snapshot(tree)).unwrap();
    SnapshotId(*blake3::hash(&envelope::seal_file_with(keys, &header, &json)).as_bytes())
}

/// The event vector: a successful transition of `www` from v1.2.2 to v1.2.3 that loaded the
/// snapshot vector; `saved` is a placeholder id (no such snapshot exists among the vectors).
fn sample_event(snapshot: SnapshotId) -> Event {
    Event {
        version: 1,
        time_ns: 1_700_000_100_000_000_000,
        service: "www".into(),
        kind: Kind::Transition,
        from: Some("v1.2.2".into()),
        to: Some("v1.2.3".into()),
        snapshot: Some(snapshot),
        saved: Some(SnapshotId([0x5a; 32])),
        outcome: "ok".into(),
        host: "host".into(),
    }
}

/// The largest event file a reader accepts (`events::list`).
const MAX_EVENT_FILE: usize = 64 * 1024;

/// The document of a prune record, as `prune.rs` writes it (its `Pending`; that module needs
/// the `rocksdb` feature, so the document is mirrored here field for field, in order).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct PruneRecord {
    version: u32,
    hidden_ns: i64,
    packs: Vec<PackId>,
}

/// The prune record vector: two packs to delete; the ids are placeholders (no such packs exist
/// among the vectors).
fn sample_prune() -> PruneRecord {
    PruneRecord {
        version: 1,
        hidden_ns: 1_700_000_200_000_000_000,
        packs: vec![PackId([0x3c; 32]), PackId([0xd7; 32])],
    }
}

/// The largest prune record a reader accepts (`prune::read_pending`).
const MAX_PRUNE_FILE: usize = 64 << 20;

// ---------------------------------------------------------------------------------------------
// Success checks
// ---------------------------------------------------------------------------------------------

fn check_derive_keys(v: &Vector) -> Result<(), String> {
    let master: [u8; 32] = v.arr("master")?;
    let keys = v.keys()?;
    for (field, ctx) in CONTEXTS {
        eq_hex(field, &blake3::derive_key(ctx, &master), &v.hex(field)?)?;
    }
    // The library uses exactly these keys for each purpose.
    let probe = b"probe";
    let k = |f: &str| v.arr::<32>(f);
    eq_hex(
        "chunk id",
        &keys.chunk_id(probe).0,
        blake3::keyed_hash(&k("chunk-id-key")?, probe).as_bytes(),
    )?;
    eq_hex(
        "tree id",
        &keys.tree_id(probe).0,
        blake3::keyed_hash(&k("tree-id-key")?, probe).as_bytes(),
    )?;
    eq_hex(
        "run id",
        &keys.run_id(probe).0,
        blake3::keyed_hash(&k("run-id-key")?, probe).as_bytes(),
    )?;
    eq_hex(
        "label hash",
        &keys.label_hash(&[]),
        &blake3::keyed_hash(&k("label-key")?, b"").as_bytes()[..16],
    )?;
    let mut gear0 = [0u8; 8];
    blake3::Hasher::new_keyed(&k("gear-key")?)
        .finalize_xof()
        .fill(&mut gear0);
    ensure(keys.gear_table()[0] == u64::from_le_bytes(gear0), || {
        "gear table word 0".into()
    })?;
    let salt = [0x55u8; 32];
    let object = ObjectKey::from_bytes(*blake3::keyed_hash(&k("seal-key")?, &salt).as_bytes());
    eq_hex(
        "object key",
        &keys.object_key(&salt).seal(0, b"", b"x"),
        &object.seal(0, b"", b"x"),
    )
}

fn check_chunk_id(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let data = v.hex("data")?;
    eq_hex("chunk id", &keys.chunk_id(&data).0, &v.hex("id")?)?;
    ensure(keys.tree_id(&data).0.to_vec() != v.hex("id")?, || {
        "tree and chunk ids coincide".into()
    })
}

fn check_tree_id(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    eq_hex("tree id", &keys.tree_id(&v.hex("data")?).0, &v.hex("id")?)
}

fn check_label_hash(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let (service, revision) = (v.hex("service")?, v.hex("revision")?);
    let mut message = Vec::new();
    for p in [&service, &revision] {
        message.extend_from_slice(&(p.len() as u64).to_le_bytes());
        message.extend_from_slice(p);
    }
    eq_hex("message", &message, &v.hex("message")?)?;
    eq_hex(
        "label hash",
        &keys.label_hash(&[&service, &revision]),
        &v.hex("hash")?,
    )
}

fn check_gear_table(v: &Vector) -> Result<(), String> {
    let table = v.keys()?.gear_table();
    for (i, w) in table.iter().enumerate().take(4) {
        let want =
            u64::from_str_radix(v.str(&format!("word-{i}"))?, 16).map_err(|e| e.to_string())?;
        ensure(*w == want, || {
            format!("word {i}: got {w:016x}, want {want:016x}")
        })?;
    }
    let bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    eq_hex(
        "first 32 table bytes",
        &bytes[..32],
        &v.hex("table-prefix")?,
    )?;
    eq_hex(
        "BLAKE3 of the table",
        blake3::hash(&bytes).as_bytes(),
        &v.hex("table-blake3")?,
    )
}

fn check_chunk_cuts(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let input = xof_input(&v.hex("seed")?, v.num("input-len")?);
    eq_hex(
        "BLAKE3 of the input",
        blake3::hash(&input).as_bytes(),
        &v.hex("input-blake3")?,
    )?;
    let params = ChunkerParams {
        min: v.num("min")?,
        avg: v.num("avg")?,
        max: v.num("max")?,
    };
    let named = match v.str("params")? {
        "TREE" => ChunkerParams::TREE,
        "STREAM" => ChunkerParams::STREAM,
        other => return Err(format!("unknown params {other}")),
    };
    ensure(params == named, || {
        format!(
            "{params:?} are not the {} defaults {named:?}",
            v.str("params").unwrap()
        )
    })?;
    let (mask_s, mask_l) =
        fastcdc::v2020::select_masks(params.avg as usize, fastcdc::v2020::Normalization::Level1);
    let hexnum = |k: &str| -> Result<u64, String> {
        u64::from_str_radix(v.str(k)?, 16).map_err(|e| e.to_string())
    };
    ensure(
        mask_s == hexnum("mask-s")? && mask_l == hexnum("mask-l")?,
        || format!("masks: got {mask_s:016x} {mask_l:016x}"),
    )?;
    let want: Vec<usize> = v
        .str("lengths")?
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("bad length {s:?}")))
        .collect::<Result<_, _>>()?;
    let chunker = Chunker::new(keys.gear_table(), params).map_err(|e| e.to_string())?;
    let got = chunker.cut_slice(&input);
    ensure(got == want, || {
        format!("cut_slice lengths {got:?}, want {want:?}")
    })?;
    let mut stream = chunker.stream(&input[..]);
    let mut streamed = Vec::new();
    while let Some(c) = stream.next_chunk().map_err(|e| e.to_string())? {
        streamed.push(c.len());
    }
    ensure(streamed == want, || {
        format!("streamed lengths {streamed:?}, want {want:?}")
    })
}

fn check_sealed_file(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let magic = magic_of(&v.hex("magic")?)?;
    let header = Header {
        magic,
        version: v.num("version")?,
        key_gen: v.num("key-gen")?,
        salt: v.arr("salt")?,
    };
    let plaintext = v.hex("plaintext")?;
    let file = v.hex("file")?;
    eq_hex("header", &header.encode(), &v.hex("header")?)?;
    eq_hex(
        "sealed file",
        &envelope::seal_file_with(&keys, &header, &plaintext),
        &file,
    )?;
    let object = ObjectKey::from_bytes(v.arr("object-key")?);
    eq_hex(
        "sealed with the object key",
        &object.seal(0, &file[..HEADER_LEN], &plaintext),
        &file[HEADER_LEN..],
    )?;
    let opened = envelope::open_file(&keys, magic, &file, &v.name).map_err(|e| e.to_string())?;
    eq_hex("opened plaintext", &opened, &plaintext)?;
    match magic {
        Magic::Config => {
            let c = Config::open(&keys, &file).map_err(|e| e.to_string())?;
            ensure(c == sample_config(), || format!("config decodes to {c:?}"))?;
            eq_hex("config JSON", &serde_json::to_vec(&c).unwrap(), &plaintext)
        }
        Magic::Snapshot => {
            let id = SnapshotId(v.arr("snapshot-id")?);
            eq_hex("snapshot id", blake3::hash(&file).as_bytes(), &id.0)?;
            let s = Snapshot::open(&keys, &id, &file).map_err(|e| e.to_string())?;
            eq_hex(
                "snapshot JSON",
                &serde_json::to_vec(&s).unwrap(),
                &plaintext,
            )?;
            let tree = keys.tree_id(&sample_tree(&keys).encode());
            ensure(s == sample_snapshot(tree), || {
                format!("snapshot decodes to {s:?}")
            })
        }
        Magic::Lock => {
            let json: serde_json::Value =
                serde_json::from_slice(&opened).map_err(|e| e.to_string())?;
            ensure(json["command"] == "backup", || "lock JSON".into())
        }
        Magic::Event => {
            ensure(file.len() <= MAX_EVENT_FILE, || {
                format!("{} bytes, more than an event file may have", file.len())
            })?;
            let ev: Event = serde_json::from_slice(&opened).map_err(|e| e.to_string())?;
            ensure(ev == sample_event(sample_snapshot_id(&keys)), || {
                format!("event decodes to {ev:?}")
            })?;
            eq_hex("event JSON", &serde_json::to_vec(&ev).unwrap(), &plaintext)?;
            let active = events::active_revision(std::slice::from_ref(&ev));
            let want = String::from_utf8(v.hex("active-revision")?).map_err(|e| e.to_string())?;
            ensure(active.as_deref() == Some(want.as_str()), || {
                format!("active revision {active:?}, want {want:?}")
            })
        }
        Magic::Prune => {
            ensure(file.len() <= MAX_PRUNE_FILE, || {
                format!("{} bytes, more than a prune record may have", file.len())
            })?;
            let p: PruneRecord = serde_json::from_slice(&opened).map_err(|e| e.to_string())?;
            ensure(p == sample_prune(), || {
                format!("prune record decodes to {p:?}")
            })?;
            eq_hex(
                "prune record JSON",
                &serde_json::to_vec(&p).unwrap(),
                &plaintext,
            )
        }
        Magic::Pack => Err("packs are not single-payload files".into()),
    }
}

fn check_pack(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let salt: [u8; 32] = v.arr("salt")?;
    let bytes = v.hex("pack")?;
    let pack_key = ObjectKey::from_bytes(v.arr("pack-key")?);
    let probe = |k: &ObjectKey| k.seal(7, b"", b"probe");
    eq_hex(
        "pack key",
        &probe(&pack_key),
        &probe(&keys.object_key(&salt)),
    )?;
    let mut b = PackBuilder::with_header(
        &keys,
        Header {
            magic: Magic::Pack,
            version: 1,
            key_gen: 0,
            salt,
        },
    );
    let mut blobs = Vec::new();
    for i in 0..v.num::<usize>("blobs")? {
        let kind = kind_of(v.num(&format!("blob-{i}-kind"))?)?;
        let data = v.hex(&format!("blob-{i}-data"))?;
        let id = BlobId(v.arr(&format!("blob-{i}-id"))?);
        let encoded = v.hex(&format!("blob-{i}-encoded"))?;
        let want_id = if kind == BlobKind::Tree {
            keys.tree_id(&data)
        } else {
            keys.chunk_id(&data)
        };
        eq_hex(&format!("blob {i} id"), &want_id.0, &id.0)?;
        if encoded[0] == 0 {
            // Stored raw: encoding is deterministic (zstd output is not part of the format).
            eq_hex(
                &format!("blob {i} encoding"),
                &blob::encode(&data, 3),
                &encoded,
            )?;
        }
        b.add(id, kind, data.len() as u32, &encoded);
        blobs.push((kind, data, id));
    }
    let (id, built, entries) = b.finish();
    eq_hex("pack bytes", &built, &bytes)?;
    eq_hex("pack id", &id.0, &v.hex("pack-id")?)?;
    eq_hex(
        "pack id of the bytes",
        blake3::hash(&bytes).as_bytes(),
        &id.0,
    )?;
    let toc_len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
    let toc_off = bytes.len() - 4 - toc_len;
    ensure(toc_off as u64 == v.num::<u64>("table-offset")?, || {
        format!("table at {toc_off}")
    })?;
    let toc = keys
        .object_key(&salt)
        .open(
            u64::MAX,
            &bytes[..HEADER_LEN],
            &bytes[toc_off..toc_off + toc_len],
        )
        .ok_or("table does not open with nonce u64::MAX")?;
    eq_hex("table plaintext", &toc, &v.hex("table")?)?;
    let decoded = pack::decode_toc(&toc, toc_off as u64, "vector").map_err(|e| e.to_string())?;
    ensure(decoded == entries, || {
        "decoded table differs from the built one".into()
    })?;
    let (key, opened) = pack::open_pack(&keys, &bytes, "vector").map_err(|e| e.to_string())?;
    ensure(opened == entries, || "open_pack table differs".into())?;
    for (i, (e, (kind, data, id))) in opened.iter().zip(&blobs).enumerate() {
        ensure(
            e.kind == *kind && e.id == *id && e.raw_len as usize == data.len(),
            || format!("entry {i}"),
        )?;
        let sealed = &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
        let got = blob::open(&key, i as u32, &e.id, e.kind, e.raw_len, sealed, "vector")
            .map_err(|e| e.to_string())?;
        eq_hex(&format!("blob {i} data"), &got, data)?;
    }
    ensure(PackId::from_hex(v.str("pack-id")?).is_ok(), || {
        "pack id is not 64 hex digits".into()
    })
}

fn check_delta_run(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let plain = v.hex("plaintext")?;
    let (h, body) = cairn_store::delta::parse(&plain, &v.name).map_err(|e| e.to_string())?;
    let header = v.hex("header")?;
    eq_hex(
        "header",
        &plain[..plain.len() - body.bytes().len()],
        &header,
    )?;
    let bases = v.hex("bases-data")?;
    let prefix = bases[h.skip as usize..(h.skip + h.prefix_len) as usize].to_vec();
    if let Ok(want) = v.hex("edits") {
        let e = cairn_store::delta::edits(body, &h, &v.name)
            .map_err(|e| e.to_string())?
            .ok_or("a version 1 body where edits are expected")?;
        eq_hex("edits", &e.to_bytes(), &want)?;
    }
    let run = cairn_store::delta::decode(body, &h, &[prefix.into()], &v.name)
        .map_err(|e| e.to_string())?;
    eq_hex("run", &run, &v.hex("run")?)?;
    eq_hex("run id", &keys.run_id(&run).0, &v.hex("run-id")?)?;
    let mut at = 0usize;
    for (id, len) in &h.members {
        let m = &run[at..at + *len as usize];
        eq_hex("member id", &keys.chunk_id(m).0, &id.0)?;
        at += *len as usize;
    }
    let mut at = 0usize;
    for (id, len) in &h.bases {
        let b = &bases[at..at + *len as usize];
        eq_hex("base id", &keys.chunk_id(b).0, &id.0)?;
        at += *len as usize;
    }
    ensure(h.depth == 1, || format!("depth {}", h.depth))
}

fn check_tree(v: &Vector) -> Result<(), String> {
    let keys = v.keys()?;
    let sub = v.hex("subtree-encoding")?;
    eq_hex("subtree encoding", &sample_subtree().encode(), &sub)?;
    eq_hex("subtree id", &keys.tree_id(&sub).0, &v.hex("subtree-id")?)?;
    let enc = v.hex("encoding")?;
    let tree = sample_tree(&keys);
    eq_hex("tree encoding", &tree.encode(), &enc)?;
    let decoded = Tree::decode(&enc, "vector").map_err(|e| e.to_string())?;
    ensure(decoded == tree, || format!("decodes to {decoded:?}"))?;
    eq_hex("tree id", &keys.tree_id(&enc).0, &v.hex("tree-id")?)
}

fn check_keyfile(v: &Vector) -> Result<(), String> {
    let master = MasterKey::from_bytes(v.arr("master")?);
    let kdf = KdfParams {
        m_kib: v.num("m-kib")?,
        t: v.num("t")?,
        p: v.num("p")?,
    };
    let host = String::from_utf8(v.hex("host")?).map_err(|e| e.to_string())?;
    let user = String::from_utf8(v.hex("user")?).map_err(|e| e.to_string())?;
    let created: i64 = v.num("created-ns")?;
    let password = v.hex("password")?;
    let file = v.hex("keyfile")?;
    let generations = v.generations()?;
    let made = keyfile::create_with_salt(
        &master,
        &generations,
        &password,
        kdf,
        &host,
        &user,
        created,
        v.arr("salt")?,
    )
    .map_err(|e| e.to_string())?;
    eq_hex("key file", &made, &file)?;
    let wrapping = ObjectKey::from_bytes(v.arr("wrapping-key")?);
    let payload = wrapping.open(
        0,
        &file[..keyfile::KEY_HEADER_LEN],
        &file[keyfile::KEY_HEADER_LEN..],
    );
    eq_hex(
        "payload",
        &payload.ok_or("the wrapping key does not open the key file")?,
        &v.hex("payload")?,
    )?;
    let (m, kf) = keyfile::open(&file, &password, "vector")
        .map_err(|e| e.to_string())?
        .ok_or("the password does not open the key file")?;
    eq_hex("master key", m.master.as_bytes(), master.as_bytes())?;
    ensure(
        m.generations.len() == generations.len()
            && m.generations
                .iter()
                .zip(&generations)
                .all(|(a, b)| a.as_bytes() == b.as_bytes()),
        || "generation keys".into(),
    )?;
    ensure(
        kf.kdf == kdf && kf.created_ns == created && kf.host == host && kf.user == user,
        || "key file metadata".into(),
    )?;
    ensure(
        keyfile::open(&file, b"not the password", "vector")
            .map_err(|e| e.to_string())?
            .is_none(),
        || "a wrong password opened the key file".into(),
    )
}

// ---------------------------------------------------------------------------------------------
// Failure checks: each returns the error (or outcome) the decoder gave
// ---------------------------------------------------------------------------------------------

/// What a decoder did with a failure vector.
enum Outcome {
    Accepted,
    WrongPassword,
    Failed(Error),
}

fn outcome<T>(r: cairn_store::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Accepted,
        Err(e) => Outcome::Failed(e),
    }
}

fn run_failure(v: &Vector) -> Result<Outcome, String> {
    Ok(match v.kind.as_str() {
        "sealed-file" => {
            let magic = magic_of(&v.hex("magic")?)?;
            outcome(envelope::open_file(
                &v.keys()?,
                magic,
                &v.hex("file")?,
                &v.name,
            ))
        }
        "pack" => {
            let keys = v.keys()?;
            let bytes = v.hex("pack")?;
            match pack::open_pack(&keys, &bytes, &v.name) {
                Err(e) => Outcome::Failed(e),
                Ok((key, entries)) => {
                    let mut out = Outcome::Accepted;
                    for (i, e) in entries.iter().enumerate() {
                        let sealed =
                            &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
                        if let Err(err) =
                            blob::open(&key, i as u32, &e.id, e.kind, e.raw_len, sealed, &v.name)
                        {
                            out = Outcome::Failed(err);
                            break;
                        }
                    }
                    out
                }
            }
        }
        "pack-table" => outcome(pack::decode_toc(
            &v.hex("table")?,
            v.num("table-offset")?,
            &v.name,
        )),
        "tree" => outcome(Tree::decode(&v.hex("encoding")?, &v.name)),
        "keyfile" => match keyfile::open(&v.hex("keyfile")?, &v.hex("password")?, &v.name) {
            Ok(Some(_)) => Outcome::Accepted,
            Ok(None) => Outcome::WrongPassword,
            Err(e) => Outcome::Failed(e),
        },
        other => return Err(format!("no failure check for type {other}")),
    })
}

fn check_failure(v: &Vector, reason: &str) -> Result<(), String> {
    let out = run_failure(v)?;
    let why = |e: &Error| match e {
        Error::Corrupt { why, .. } => why.clone(),
        _ => String::new(),
    };
    let ok = match (reason, &out) {
        ("wrong-password", Outcome::WrongPassword) => true,
        ("newer-format", Outcome::Failed(Error::NewerFormat { .. })) => true,
        ("authentication", Outcome::Failed(e)) => why(e).contains("authentication"),
        ("truncated", Outcome::Failed(e)) => why(e).contains("truncated"),
        ("kdf-bounds", Outcome::Failed(e)) => why(e).contains("out of bounds"),
        _ => false,
    };
    ensure(ok, || {
        let got = match &out {
            Outcome::Accepted => "accepted".to_string(),
            Outcome::WrongPassword => "wrong password".to_string(),
            Outcome::Failed(e) => format!("error: {e}"),
        };
        format!("expected failure `{reason}`, got {got}")
    })
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

fn check(v: &Vector) -> Result<(), String> {
    match &v.expect {
        Expect::Failure(reason) => check_failure(v, reason),
        Expect::Success => match v.kind.as_str() {
            "derive-keys" => check_derive_keys(v),
            "chunk-id" => check_chunk_id(v),
            "tree-id" => check_tree_id(v),
            "label-hash" => check_label_hash(v),
            "gear-table" => check_gear_table(v),
            "chunk-cuts" => check_chunk_cuts(v),
            "sealed-file" => check_sealed_file(v),
            "pack" => check_pack(v),
            "tree" => check_tree(v),
            "delta-run" => check_delta_run(v),
            "keyfile" => check_keyfile(v),
            other => Err(format!("unknown vector type {other}")),
        },
    }
}

#[test]
fn format_vectors() {
    let dir = vectors_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for r in REQUIRED {
        if !names.iter().any(|n| n == r) {
            failures.push(format!("{r}: missing"));
        }
    }
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        match Vector::parse(name, &text).and_then(|v| check(&v)) {
            Ok(()) => println!("ok    {name}"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{} vectors checked", names.len());
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// The fields of one vector file being written.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn with_master(master: &[u8; 32]) -> Self {
        let mut f = Self::default();
        f.hex("master", master);
        f
    }
    fn add(&mut self, k: impl Into<String>, v: impl ToString) -> &mut Self {
        self.0.push((k.into(), v.to_string()));
        self
    }
    fn hex(&mut self, k: impl Into<String>, v: impl AsRef<[u8]>) -> &mut Self {
        self.add(k, hex::encode(v))
    }
}

/// Writes vector files into one directory.
struct Out(PathBuf);

impl Out {
    fn write(&self, name: &str, expect: &str, kind: &str, comments: &[&str], f: &Fields) {
        let mut s = format!("expect: {expect}\ntype: {kind}\n");
        for c in comments {
            s.push_str(&format!("comment: {c}\n"));
        }
        for (k, v) in &f.0 {
            s.push_str(&format!("{k}: {v}\n"));
        }
        std::fs::write(self.0.join(name), s).unwrap();
    }
}

/// 32 consecutive byte values from `start`: the fixed master key and salts.
fn seq32(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + i as u8)
}

/// The AES key of the object with `salt`, computed from the spec (not through `Keys`).
fn object_key_bytes(master: &[u8; 32], salt: &[u8; 32]) -> [u8; 32] {
    *blake3::keyed_hash(&blake3::derive_key("cairn 2026 seal", master), salt).as_bytes()
}

/// Argon2id v0x13 raw 32-byte output: the key file's wrapping key, printed for implementers.
fn argon2_raw(password: &[u8], salt: &[u8; 32], kdf: KdfParams) -> [u8; 32] {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).unwrap();
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .unwrap();
    out
}

/// Regenerates every vector into a temporary directory and compares it with the committed
/// file, so the generator and the vectors cannot drift apart. With CAIRN_WRITE_VECTORS=DIR it
/// writes the files there instead (for a deliberate format change).
#[test]
fn regenerated_vectors_match_committed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let write_to = std::env::var("CAIRN_WRITE_VECTORS").ok().map(PathBuf::from);
    let out = Out(write_to.clone().unwrap_or_else(|| tmp.path().to_path_buf()));
    std::fs::create_dir_all(&out.0).unwrap();
    generate(&out);
    if write_to.is_some() {
        return;
    }
    let mut compared = 0;
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let e = e.unwrap();
        let committed = std::fs::read_to_string(vectors_dir().join(e.file_name()))
            .unwrap_or_else(|_| panic!("{:?} is generated but not committed", e.file_name()));
        let fresh = std::fs::read_to_string(e.path()).unwrap();
        assert_eq!(
            fresh,
            committed,
            "{:?} differs from what the generator makes",
            e.file_name()
        );
        compared += 1;
    }
    // All but the vectors of formats this build only reads.
    assert_eq!(compared, REQUIRED.len() - READ_ONLY.len());
}

/// Committed vectors of older formats this build still reads but no longer writes.
const READ_ONLY: &[&str] = &["delta-run.txt"];

fn generate(out: &Out) {
    let master_bytes = seq32(0x01);
    let master = MasterKey::from_bytes(master_bytes);
    let keys = Keys::derive(&master);
    let base = || Fields::with_master(&master_bytes);

    // Keys and ids.
    let mut f = base();
    for (field, ctx) in CONTEXTS {
        f.hex(field, blake3::derive_key(ctx, &master_bytes));
    }
    let c = ["master key 01..20; one BLAKE3 derive_key per purpose"];
    out.write("derive-keys.txt", "success", "derive-keys", &c, &f);

    let data = b"The quick brown fox jumps over the lazy dog";
    let mut f = base();
    f.hex("data", data).hex("id", keys.chunk_id(data).0);
    let c = ["keyed BLAKE3 under chunk-id-key"];
    out.write("chunk-id.txt", "success", "chunk-id", &c, &f);
    let mut f = base();
    f.hex("data", data).hex("id", keys.tree_id(data).0);
    let c = ["keyed BLAKE3 under tree-id-key; same data as chunk-id.txt"];
    out.write("tree-id.txt", "success", "tree-id", &c, &f);

    let (service, revision) = (b"www".as_slice(), b"v1.2.3".as_slice());
    let mut message = Vec::new();
    for p in [service, revision] {
        message.extend_from_slice(&(p.len() as u64).to_le_bytes());
        message.extend_from_slice(p);
    }
    let mut f = base();
    f.hex("service", service)
        .hex("revision", revision)
        .hex("message", &message);
    f.hex("hash", keys.label_hash(&[service, revision]));
    let c = ["label www@v1.2.3; hash = first 16 bytes of keyed BLAKE3(label-key, message)"];
    out.write("label-hash.txt", "success", "label-hash", &c, &f);

    let table = keys.gear_table();
    let table_bytes: Vec<u8> = table.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut f = base();
    for (i, w) in table.iter().take(4).enumerate() {
        f.add(format!("word-{i}"), format!("{w:016x}"));
    }
    f.hex("table-prefix", &table_bytes[..32]);
    f.hex("table-blake3", blake3::hash(&table_bytes).as_bytes());
    let c =
        ["words: u64 values, most significant hex digit first, read little-endian from the XOF"];
    out.write("gear-table.txt", "success", "gear-table", &c, &f);

    // Chunking.
    let seed = b"cairn chunker test input";
    let runs = [
        ("chunk-cuts-tree.txt", "TREE", ChunkerParams::TREE, 1 << 20),
        (
            "chunk-cuts-tree-8mib.txt",
            "TREE",
            ChunkerParams::TREE,
            8 << 20,
        ),
        (
            "chunk-cuts-stream.txt",
            "STREAM",
            ChunkerParams::STREAM,
            1 << 20,
        ),
    ];
    for (file, name, params, len) in runs {
        let input = xof_input(seed, len);
        let level = fastcdc::v2020::Normalization::Level1;
        let (s, l) = fastcdc::v2020::select_masks(params.avg as usize, level);
        let lens = Chunker::new(table, params).unwrap().cut_slice(&input);
        let lens: Vec<String> = lens.iter().map(|n| n.to_string()).collect();
        let mut f = base();
        f.hex("seed", seed)
            .add("input-len", len)
            .hex("input-blake3", blake3::hash(&input).as_bytes());
        f.add("params", name)
            .add("min", params.min)
            .add("avg", params.avg)
            .add("max", params.max);
        f.add("mask-s", format!("{s:016x}"))
            .add("mask-l", format!("{l:016x}"));
        f.add("lengths", lens.join(","));
        let note = if len == 1 << 20 && name == "TREE" {
            "1 MiB is less than avg: the strict mask runs to the end of the input and finds no cut"
        } else {
            "chunk lengths in order, decimal"
        };
        let c = [
            "input = first input-len bytes of the unkeyed BLAKE3 XOF of seed",
            note,
        ];
        out.write(file, "success", "chunk-cuts", &c, &f);
    }

    // Sealed single-payload files.
    let tree = sample_tree(&keys);
    let tree_enc = tree.encode();
    let tree_id = keys.tree_id(&tree_enc);
    let sealed = |magic: Magic, version: u16, salt: [u8; 32], plaintext: &[u8]| {
        let header = Header {
            magic,
            version,
            key_gen: 0,
            salt,
        };
        let file = envelope::seal_file_with(&keys, &header, plaintext);
        let mut f = base();
        f.hex("magic", magic.bytes())
            .add("version", version)
            .add("key-gen", 0);
        f.hex("salt", salt)
            .hex("object-key", object_key_bytes(&master_bytes, &salt));
        f.hex("header", header.encode())
            .hex("plaintext", plaintext)
            .hex("file", &file);
        (f, file)
    };
    let config_json = serde_json::to_vec(&sample_config()).unwrap();
    let (f, _) = sealed(Magic::Config, 1, seq32(0xa0), &config_json);
    let c = ["the repository config: JSON sealed under nonce 0 with the header as AAD"];
    out.write("sealed-config.txt", "success", "sealed-file", &c, &f);
    let snapshot_json = serde_json::to_vec(&sample_snapshot(tree_id)).unwrap();
    let (mut f, file) = sealed(Magic::Snapshot, 1, seq32(0x80), &snapshot_json);
    f.hex("snapshot-id", blake3::hash(&file).as_bytes());
    let c = ["a snapshot of the root tree of tree.txt; snapshot-id = BLAKE3 of the file"];
    out.write("sealed-snapshot.txt", "success", "sealed-file", &c, &f);
    let (f, _) = sealed(Magic::Lock, 1, seq32(0x60), LOCK_JSON.as_bytes());
    out.write(
        "sealed-lock.txt",
        "success",
        "sealed-file",
        &["a shared lock"],
        &f,
    );
    // A lock sealed under key generation 1 (after one `key rotate`).
    let generation_key = seq32(0xd0);
    let rotated = Keys::derive_with(&master, &[MasterKey::from_bytes(generation_key)]);
    let gheader = Header {
        magic: Magic::Lock,
        version: 1,
        key_gen: 1,
        salt: seq32(0x68),
    };
    let gfile = envelope::seal_file_with(&rotated, &gheader, LOCK_JSON.as_bytes());
    let mut f = base();
    f.hex("generation-keys", generation_key);
    f.hex("magic", Magic::Lock.bytes())
        .add("version", 1)
        .add("key-gen", 1);
    f.hex("salt", gheader.salt).hex(
        "object-key",
        object_key_bytes(&generation_key, &gheader.salt),
    );
    f.hex("header", gheader.encode())
        .hex("plaintext", LOCK_JSON.as_bytes())
        .hex("file", &gfile);
    let c = [
        "sealed-lock.txt sealed under key generation 1: the object key comes from the generation key",
        "(generation-keys, generation 1 first) in place of the master key",
    ];
    out.write("sealed-generation.txt", "success", "sealed-file", &c, &f);
    let event = sample_event(SnapshotId(*blake3::hash(&file).as_bytes()));
    let event_json = serde_json::to_vec(&event).unwrap();
    let (mut f, _) = sealed(Magic::Event, 1, seq32(0x40), &event_json);
    let active = events::active_revision(std::slice::from_ref(&event)).unwrap();
    f.hex("active-revision", active);
    let c = [
        "a journal event: the transition of www from v1.2.2 to v1.2.3 that loaded the snapshot \
         of sealed-snapshot.txt",
        "saved is a placeholder id; active-revision (UTF-8) is what a reader derives from this \
         event alone",
    ];
    out.write("sealed-event.txt", "success", "sealed-file", &c, &f);
    let prune_json = serde_json::to_vec(&sample_prune()).unwrap();
    let (f, _) = sealed(Magic::Prune, 1, seq32(0x20), &prune_json);
    let c = [
        "a prune record: packs 3c3c...3c and d7d7...d7 (placeholder ids) are to be deleted, \
         hidden from the index at hidden_ns",
    ];
    out.write("sealed-prune.txt", "success", "sealed-file", &c, &f);
    let (f, _) = sealed(Magic::Config, 2, seq32(0xa0), &config_json);
    let c = ["a config validly sealed with format version 2: refused before decryption"];
    out.write(
        "sealed-newer-version.txt",
        "failure newer-format",
        "sealed-file",
        &c,
        &f,
    );

    // Pack.
    let salt = seq32(0xc0);
    let header = Header {
        magic: Magic::Pack,
        version: 1,
        key_gen: 0,
        salt,
    };
    let mut builder = PackBuilder::with_header(&keys, header);
    let d0 = b"hello, cairn\n".to_vec();
    let blobs = [
        (BlobKind::Data, keys.chunk_id(&d0), blob::encode(&d0, 3), d0),
        (
            BlobKind::Tree,
            tree_id,
            blob::encode(&tree_enc, 3),
            tree_enc.clone(),
        ),
    ];
    assert_eq!(
        (blobs[0].2[0], blobs[1].2[0]),
        (0, 1),
        "blob 0 raw, blob 1 compressed"
    );
    let mut f = base();
    f.hex("salt", salt)
        .hex("pack-key", object_key_bytes(&master_bytes, &salt));
    f.add("blobs", blobs.len());
    for (i, (kind, id, encoded, data)) in blobs.iter().enumerate() {
        builder.add(*id, *kind, data.len() as u32, encoded);
        f.add(format!("blob-{i}-kind"), *kind as u8)
            .hex(format!("blob-{i}-data"), data);
        f.hex(format!("blob-{i}-id"), id.0)
            .hex(format!("blob-{i}-encoded"), encoded);
    }
    let (pack_id, pack_bytes, entries) = builder.finish();
    let toc_off = entries
        .last()
        .map(|e| e.offset + e.stored_len as u64)
        .unwrap() as usize;
    let sealed_toc = &pack_bytes[toc_off..pack_bytes.len() - 4];
    let toc = keys
        .object_key(&salt)
        .open(u64::MAX, &pack_bytes[..HEADER_LEN], sealed_toc)
        .unwrap();
    f.add("table-offset", toc_off).hex("table", &toc);
    f.hex("pack", &pack_bytes).hex("pack-id", pack_id.0);
    let c = [
        "blob 0: a data chunk stored raw (compression byte 0)",
        "blob 1: the tree of tree.txt, zstd-compressed (compression byte 1)",
        "blob-N-encoded is the blob plaintext; zstd output is not canonical, so it is given",
    ];
    out.write("pack.txt", "success", "pack", &c, &f);
    let flipped = |at: usize| {
        let mut p = pack_bytes.clone();
        p[at] ^= 0x01;
        let mut f = base();
        f.hex("pack", p);
        f
    };
    let blob1 = entries[1].offset as usize;
    let c = ["pack.txt with bit 0 of byte 5 of blob 1 flipped: the table opens, blob 1 does not"];
    out.write(
        "pack-flipped-blob.txt",
        "failure authentication",
        "pack",
        &c,
        &flipped(blob1 + 5),
    );
    let c = ["pack.txt with bit 0 of byte 3 of the sealed table flipped"];
    out.write(
        "pack-flipped-table.txt",
        "failure authentication",
        "pack",
        &c,
        &flipped(toc_off + 3),
    );
    let c = ["pack.txt with bit 0 of header byte 20 (in the salt) flipped: another key"];
    out.write(
        "pack-flipped-salt.txt",
        "failure authentication",
        "pack",
        &c,
        &flipped(20),
    );
    let mut bad_toc = toc.clone();
    bad_toc[4] = 3;
    let mut f = Fields::default();
    f.add("table-offset", toc_off).hex("table", &bad_toc);
    let c = ["the table plaintext of pack.txt with entry 0's kind set to 3 (unassigned)"];
    out.write(
        "pack-table-unknown-kind.txt",
        "failure newer-format",
        "pack-table",
        &c,
        &f,
    );

    // Trees.
    let sub = sample_subtree().encode();
    let mut f = base();
    f.hex("subtree-encoding", &sub)
        .hex("subtree-id", keys.tree_id(&sub).0);
    f.hex("encoding", &tree_enc).hex("tree-id", tree_id.0);
    let c = [
        "a.txt: file, parts hello+space and world+newline (ids under master), 2 xattrs",
        "b: dir -> the subtree (one empty file x); c-\\xff: symlink -> a.txt; d: hard link -> b/x",
        "e: char device 0x0501; f: block device 0x0800; g: fifo with negative times",
    ];
    out.write("tree.txt", "success", "tree", &c, &f);

    // A delta run: two members, compressed against a prefix cut from two base chunks.
    let base_a = b"INSERT INTO t VALUES (1,'alice',10),(2,'bob',20),(3,'carol',30);\n".repeat(3);
    let base_b = b"INSERT INTO t VALUES (4,'dave',40),(5,'erin',50);\n".repeat(2);
    let member_a = b"INSERT INTO t VALUES (1,'alice',11),(2,'bob',20),(3,'carol',30);\n".repeat(3);
    let member_b = b"INSERT INTO t VALUES (4,'dave',40),(5,'erin',55),(6,'frank',60);\n".to_vec();
    let mut bases_data = base_a.clone();
    bases_data.extend_from_slice(&base_b);
    let mut run = member_a.clone();
    run.extend_from_slice(&member_b);
    let (skip, prefix_len) = (7u32, (bases_data.len() - 9) as u32);
    let h = cairn_store::delta::RunHeader {
        depth: 1,
        members: vec![
            (keys.chunk_id(&member_a), member_a.len() as u32),
            (keys.chunk_id(&member_b), member_b.len() as u32),
        ],
        bases: vec![
            (keys.chunk_id(&base_a), base_a.len() as u32),
            (keys.chunk_id(&base_b), base_b.len() as u32),
        ],
        skip,
        prefix_len,
    };
    let prefix = &bases_data[skip as usize..(skip + prefix_len) as usize];
    let plain = cairn_store::delta::encode(&h, &run, prefix, 0, 3).unwrap();
    let (_, body) = cairn_store::delta::parse(&plain, "vector").unwrap();
    let edits = cairn_store::delta::edits(body, &h, "vector")
        .unwrap()
        .unwrap();
    let header_len = plain.len() - body.bytes().len();
    let mut f = base();
    f.hex("bases-data", &bases_data)
        .hex("run", &run)
        .hex("run-id", keys.run_id(&run).0);
    f.hex("header", &plain[..header_len])
        .hex("edits", edits.to_bytes())
        .hex("plaintext", &plain);
    let c = [
        "a delta run of version 2 (compression byte 2 first): header, then a zstd frame of its",
        "edits (copies from bases-data[skip .. skip+prefix length] and literals); the edits a",
        "writer finds are its choice, so a checker decodes the frame, applies it and compares",
    ];
    out.write("delta-run-edits.txt", "success", "delta-run", &c, &f);
    // delta-run.txt (version 1, a zstd frame against the prefix) was written by an earlier
    // build and is kept as it is: readers still decode it.
    let mut f = Fields::default();
    f.hex("encoding", &tree_enc[..tree_enc.len() - 1]);
    let c = ["tree.txt's encoding without its last byte"];
    out.write("tree-truncated.txt", "failure truncated", "tree", &c, &f);
    let mut delta = sample_tree(&keys);
    if let Node::File(parts) = &mut delta.entries[0].node {
        parts[0].kind = 2;
    }
    let mut f = Fields::default();
    f.hex("encoding", delta.encode());
    let c = ["tree.txt with part 0 of a.txt of kind 2 (0: a chunk, 1: a chunk in a delta run)"];
    out.write(
        "tree-unknown-part.txt",
        "failure newer-format",
        "tree",
        &c,
        &f,
    );

    // Key files.
    let kdf = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };
    let salt = seq32(0xe0);
    let password = b"correct horse battery staple";
    let (created, host, user) = (1_700_000_000_000_000_000i64, "host", "user");
    let kf =
        keyfile::create_with_salt(&master, &[], password, kdf, host, user, created, salt).unwrap();
    let wrapping = argon2_raw(password, &salt, kdf);
    let payload = ObjectKey::from_bytes(wrapping)
        .open(0, &kf[..56], &kf[56..])
        .unwrap();
    let mut f = base();
    f.hex("password", password)
        .add("m-kib", kdf.m_kib)
        .add("t", kdf.t)
        .add("p", kdf.p);
    f.hex("salt", salt)
        .add("created-ns", created)
        .hex("host", host)
        .hex("user", user);
    f.hex("wrapping-key", wrapping)
        .hex("payload", &payload)
        .hex("keyfile", &kf);
    let c = ["Argon2id v0x13, m=8 KiB t=1 p=1 (test-only parameters), 32-byte output"];
    out.write("keyfile.txt", "success", "keyfile", &c, &f);
    // After one `key rotate`: version 2, the generation key after the user name.
    let generation_key = seq32(0xd0);
    let gsalt = seq32(0xc8);
    let gkf = keyfile::create_with_salt(
        &master,
        &[MasterKey::from_bytes(generation_key)],
        password,
        kdf,
        host,
        user,
        created,
        gsalt,
    )
    .unwrap();
    let gwrapping = argon2_raw(password, &gsalt, kdf);
    let gpayload = ObjectKey::from_bytes(gwrapping)
        .open(0, &gkf[..56], &gkf[56..])
        .unwrap();
    let mut f = base();
    f.hex("generation-keys", generation_key);
    f.hex("password", password)
        .add("m-kib", kdf.m_kib)
        .add("t", kdf.t)
        .add("p", kdf.p);
    f.hex("salt", gsalt)
        .add("created-ns", created)
        .hex("host", host)
        .hex("user", user);
    f.hex("wrapping-key", gwrapping)
        .hex("payload", &gpayload)
        .hex("keyfile", &gkf);
    let c = [
        "a key file after one `key rotate`: version 2; the payload ends with a u16 count (1) and",
        "the generation keys (generation 1 first)",
    ];
    out.write("keyfile-generations.txt", "success", "keyfile", &c, &f);
    let failing = |bytes: &[u8]| {
        let mut f = Fields::default();
        f.hex("password", password).hex("keyfile", bytes);
        f
    };
    let mut bad = kf.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    let c = ["keyfile.txt with bit 7 of its last byte (tag) flipped: looks like a wrong password"];
    out.write(
        "keyfile-flipped-tag.txt",
        "failure wrong-password",
        "keyfile",
        &c,
        &failing(&bad),
    );
    let mut newer = kf.clone();
    newer[8] = 3;
    let c = ["keyfile.txt with the version field set to 3"];
    out.write(
        "keyfile-newer-version.txt",
        "failure newer-format",
        "keyfile",
        &c,
        &failing(&newer),
    );
    // The writer refuses out-of-bounds parameters, so the hostile file is patched by hand:
    // readers must refuse it on the header alone, before running Argon2 or opening the seal.
    assert!(
        keyfile::create_with_salt(
            &master,
            &[],
            password,
            KdfParams { t: 65, ..kdf },
            host,
            user,
            created,
            salt
        )
        .is_err()
    );
    let mut hostile = kf.clone();
    hostile[16..20].copy_from_slice(&65u32.to_le_bytes());
    let c = ["keyfile.txt with t (bytes 16..20) set to 65; the bound is 64"];
    out.write(
        "keyfile-kdf-bounds.txt",
        "failure kdf-bounds",
        "keyfile",
        &c,
        &failing(&hostile),
    );
}
