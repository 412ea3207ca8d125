//! Delta-run headers and frames never panic and never allocate beyond their bounds; a run
//! that decodes has exactly the length its members say.
#![no_main]
use cairn_store::delta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, frame)) = delta::parse(data, "fuzz") {
        let prefix = vec![b'x'; (h.prefix_len as usize).min(1 << 16)];
        if let Ok(run) = delta::decode(frame, &prefix, h.run_len(), "fuzz") {
            assert_eq!(run.len() as u64, h.run_len());
        }
    }
});
