//! The config file and the envelope header never panic.
#![no_main]
use cairn_store::config::Config;
use cairn_store::crypto::{Keys, MasterKey};
use cairn_store::envelope::{Header, Magic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(data, Magic::Config, "fuzz");
    let _ = serde_json::from_slice::<Config>(data);
    let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
    let _ = Config::open(&keys, data);
    // With generation keys: a header's key generation picks among them, or is refused.
    let rotated = Keys::derive_with(
        &MasterKey::from_bytes([1; 32]),
        &[MasterKey::from_bytes([2; 32])],
    );
    let _ = Config::open(&rotated, data);
});
