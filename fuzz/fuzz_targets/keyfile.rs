//! Key files never panic and never demand unbounded memory (the KDF parameters are bounded
//! before Argon2 runs; inputs whose header would ask for heavy work are not run further).
//! The payload parser (both versions) is fed directly, since random bytes never authenticate.
#![no_main]
use cairn_store::keyfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for version in [1, 2] {
        let _ = keyfile::decode_payload(data, version, "fuzz");
    }
    if let Ok((kdf, _)) = keyfile::params(data, "fuzz") {
        if kdf.m_kib <= 64 && kdf.t <= 2 {
            let _ = keyfile::open(data, b"password", "fuzz");
        }
    }
});
