//! Tree decoding never panics, and decode → encode reproduces the input.
#![no_main]
use cairn_store::tree::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode(data, "fuzz") {
        assert_eq!(t.encode(), data);
    }
});
