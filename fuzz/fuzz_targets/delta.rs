//! Delta-run headers, frames and edit lists never panic and never allocate beyond their
//! bounds; a run that decodes has exactly the length its members say. And the writer's
//! edits of any run against any prefix make that run again, and read back as written.
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
    // The writer: the input is a prefix, and the run is that prefix with bytes inserted,
    // deleted and changed where the first four bytes say.
    if let Some((ctl, prefix)) = data.split_first_chunk::<4>() {
        let at = |b: u8, n: usize| {
            if n == 0 {
                0
            } else {
                b as usize * 7919 % (n + 1)
            }
        };
        let mut run = prefix.to_vec();
        let i = at(ctl[0], run.len());
        let inserted: Vec<u8> = prefix
            .iter()
            .rev()
            .take(ctl[1] as usize % 97)
            .copied()
            .collect();
        run.splice(i..i, inserted);
        let j = at(ctl[2], run.len());
        let k = (j + ctl[3] as usize % 40).min(run.len());
        run.drain(j..k);
        if let Some(b) = run.get_mut(at(ctl[3], prefix.len()) % (prefix.len() + 1)) {
            *b ^= ctl[1] | 1;
        }
        let hint = at(ctl[2] ^ ctl[0], prefix.len());
        let e = delta::Edits::find(prefix, &run, hint);
        assert_eq!(e.apply(&[prefix.to_vec().into()], run.len() as u64), run);
        let back =
            delta::Edits::from_bytes(&e.to_bytes(), run.len() as u64, prefix.len() as u32, "fuzz")
                .expect("the writer's edits read back");
        assert_eq!(back, e);
    }
});
