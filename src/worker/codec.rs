//! The one codec of the worker layer: rows, outputs and the records the
//! service stores (see `job.rs`).
//!
//! The format is bincode 1.3 with fixed-width little-endian integers, at
//! most [`MAX_RECORD_BYTES`] per record. This file is the only place that
//! knows it.
//!
//! Invariant: [`decode`] is bounded by [`MAX_RECORD_BYTES`] and never
//! panics, so a damaged or hostile payload is refused, not allocated.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest encoded job or result accepted by the codec: 16 MiB.
pub const MAX_RECORD_BYTES: u64 = 16 << 20;

/// A record the codec cannot encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The record is over [`MAX_RECORD_BYTES`], or serde cannot encode it.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The bytes are not an encoded record of the type asked for.
    #[error("cannot decode: {0}")]
    Decode(String),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_RECORD_BYTES)
}

/// Encode a record.
///
/// # Errors
/// [`CodecError::Encode`] for a record over the size limit, or one serde
/// cannot encode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    options()
        .serialize(value)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encode `value` onto the end of `out`.
///
/// # Errors
/// As [`encode`].
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    options()
        .serialize_into(out, value)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decode a record; bounded, never panics.
///
/// # Errors
/// [`CodecError::Decode`] for bytes that are not an encoded `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    options()
        .deserialize(bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_and_refuses_garbage() {
        let row: (u64, Vec<f32>) = (7, vec![1.5, 2.5]);
        let bytes = encode(&row).unwrap();
        assert_eq!(decode::<(u64, Vec<f32>)>(&bytes).unwrap(), row);
        assert!(decode::<(u64, Vec<f32>)>(&bytes[..5]).is_err());
        // A length prefix claiming 2^40 elements must fail, not allocate.
        let mut evil = bytes.clone();
        evil[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<(u64, Vec<f32>)>(&evil).is_err());
    }
}
