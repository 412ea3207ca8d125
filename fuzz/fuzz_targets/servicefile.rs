//! The service file parser never panics, whatever the text.
#![no_main]
use cairn_store::servicefile::ServiceFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ServiceFile::parse(text);
    }
});
