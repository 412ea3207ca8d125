//! Key files never panic and never demand unbounded memory (the KDF parameters are bounded
//! before Argon2 runs; inputs whose header would ask for heavy work are not run further).
#![no_main]
use cairn_store::keyfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((kdf, _)) = keyfile::params(data, "fuzz") {
        if kdf.m_kib <= 64 && kdf.t <= 2 {
            let _ = keyfile::open(data, b"password", "fuzz");
        }
    }
});
