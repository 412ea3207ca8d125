//! Streaming and slice chunking cut at the same points, whatever the input and read sizes.
#![no_main]
use std::io::Read;

use cairn_store::chunker::{Chunker, ChunkerParams};
use cairn_store::crypto::{Keys, MasterKey};
use libfuzzer_sys::fuzz_target;

struct Trickle<'a>(&'a [u8], usize);
impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(buf.len()).min(self.1);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let step = data[0] as usize + 1;
    let keys = Keys::derive(&MasterKey::from_bytes([1; 32]));
    let c = Chunker::new(
        keys.gear_table(),
        ChunkerParams {
            min: 64,
            avg: 256,
            max: 1024,
        },
    )
    .unwrap();
    let want = c.cut_slice(&data[1..]);
    let mut s = c.stream(Trickle(&data[1..], step));
    let mut got = Vec::new();
    while let Some(ch) = s.next_chunk().unwrap() {
        got.push(ch.len());
    }
    assert_eq!(got, want);
});
