//! What the lanelog fuzz targets check, kept out of the `fuzz/fuzz_targets/`
//! wrappers so the seed generator (`fuzz/examples/gen_corpus.rs`) shares
//! the input formats with the targets, and the test suite replays every
//! committed corpus and regression input through the same checks without
//! libFuzzer (`tests/fuzz_corpus.rs`).
//!
//! - [`decode`]: the pure decoders of `lanelog::codec` never panic, and
//!   whatever they accept re-encodes to the same bytes.
//! - [`image`]: a whole queue directory from arbitrary bytes, opened and
//!   drained on a `MemoryStorage`.
//! - [`ops`]: operation sequences with crashes (enqueues with deadlines,
//!   delays and idempotency keys, completes and results, clock steps that
//!   miss deadlines and run retention), checked against the reference
//!   model of the shared test kit (`crate::model`) and its crash oracles
//!   (`crate::oracle`).
//!
//! Every target's oracle is a panic: a failed `assert!` here is a finding.

pub mod decode;
pub mod image;
pub mod ops;

/// A little-endian byte reader that never fails: past the end it yields
/// zeros, so every input means something.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Read `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    /// One byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A little-endian u16, zero-padded past the end.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let got = self.take(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    /// A little-endian u32, zero-padded past the end.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let got = self.take(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(b)
    }
}
