//! A pack's table: the plaintext decoder and the sealed entry point never panic.
#![no_main]
use cairn_store::crypto::{Keys, MasterKey};
use cairn_store::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pack::decode_toc(data, data.len() as u64 * 64, "fuzz");
    let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
    let _ = pack::open_pack(&keys, data, "fuzz");
});
