//! Snapshot documents: the sealed file and the JSON inside never panic.
#![no_main]
use cairn_store::SnapshotId;
use cairn_store::crypto::{Keys, MasterKey};
use cairn_store::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Snapshot>(data);
    let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
    let id = SnapshotId(*blake3::hash(data).as_bytes());
    let _ = Snapshot::open(&keys, &id, data);
});
