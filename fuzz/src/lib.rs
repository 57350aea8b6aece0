//! What the lanelog fuzz targets check, kept out of the `fuzz_targets/`
//! wrappers so the seed generator (`examples/gen_corpus.rs`) shares the
//! input formats with the targets.
//!
//! - [`decode`]: the pure decoders of `lanelog::codec` never panic, and
//!   whatever they accept re-encodes to the same bytes.
//! - [`image`]: a whole queue directory from arbitrary bytes, opened and
//!   drained on a `MemoryStorage`.
//! - [`ops`]: operation sequences with crashes, checked against a model.
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

/// Bytes of a seeded splitmix64 stream, made once: payloads are slices
/// of it, so making and checking one costs a copy (a loop here would run
/// under the fuzzer's comparison tracing on every byte).
fn pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = (1 << 20) + (1 << 16);
        let mut out = Vec::with_capacity(n + 8);
        let mut state = 0x5EED_0F1A_4E10_6000_u64;
        while out.len() < n {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out
    })
}

/// The payload of a message from its tag and length (at most 1 MiB): the
/// tag's bytes, then pseudo-random bytes from an offset the tag picks, cut
/// to `len`. A checker that knows (tag, len) tells any change, truncation
/// or swap of payloads.
pub fn payload(tag: u64, len: usize) -> Vec<u8> {
    assert!(len <= 1 << 20, "payloads are at most 1 MiB");
    let pool = pool();
    let at = (tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize;
    let mut out = Vec::with_capacity(len.max(8));
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&pool[at..at + len.saturating_sub(8)]);
    out.truncate(len);
    out
}
