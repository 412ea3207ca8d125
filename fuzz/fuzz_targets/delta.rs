//! Delta-run headers, frames and edit lists never panic and never allocate beyond their
//! bounds; a run that decodes has exactly the length its members say.
#![no_main]
use cairn_store::delta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((h, body)) = delta::parse(data, "fuzz") {
        // Short prefixes are refused, never read past.
        let prefix = vec![b'x'; (h.prefix_len as usize).min(1 << 16)];
        // The prefix in two pieces, as a chain's bases often are.
        let cut = prefix.len() / 3;
        let pieces = [prefix[..cut].to_vec().into(), prefix[cut..].to_vec().into()];
        if let Ok(run) = delta::decode(body, &h, &pieces, "fuzz") {
            assert_eq!(run.len() as u64, h.run_len());
        }
    }
    // Edit lists on their own, against a small prefix.
    if let Some((&n, rest)) = data.split_first() {
        let run_len = n as u64 * 64;
        if let Ok(e) = delta::Edits::from_bytes(rest, run_len, 4096, "fuzz") {
            let prefix = vec![b'y'; 4096];
            assert_eq!(e.apply(&[prefix.into()], run_len).len() as u64, run_len);
        }
    }
});
