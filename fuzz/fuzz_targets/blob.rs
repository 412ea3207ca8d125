//! Blob opening never panics, whatever the sealed bytes and lengths claimed.
#![no_main]
use cairn_store::BlobId;
use cairn_store::blob::{self, BlobKind};
use cairn_store::crypto::ObjectKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let raw_len = u32::from_le_bytes(data[..4].try_into().unwrap());
    let key = ObjectKey::from_bytes([2; 32]);
    let _ = blob::open(
        &key,
        0,
        &BlobId([0; 32]),
        BlobKind::Data,
        raw_len,
        &data[4..],
        "fuzz",
    );
    // Round trip: what is sealed opens to the same bytes.
    let enc = blob::encode(&data[4..], 1);
    let sealed = blob::seal(&key, 7, &BlobId([3; 32]), BlobKind::Tree, &enc);
    let back = blob::open(
        &key,
        7,
        &BlobId([3; 32]),
        BlobKind::Tree,
        (data.len() - 4) as u32,
        &sealed,
        "fuzz",
    )
    .unwrap();
    assert_eq!(back, &data[4..]);
});
