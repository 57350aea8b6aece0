//! The one codec for job and result payloads: what a [`WorkerPool`] fed by
//! hand expects in its jobs queue ([`JobRecord`]) and writes to its results
//! queue ([`ResultRecord`]).
//!
//! The format is bincode 1.3 with fixed-width little-endian integers, at
//! most [`MAX_RECORD_BYTES`] per record. This file is the only place that
//! knows it: besides [`encode`] and [`decode`] it holds the two fast paths
//! that write the layout around bytes already encoded (a job around its
//! encoded rows, a `Done` result around its encoded outcomes), so a table is
//! encoded once rather than once per row and again per job.
//!
//! Invariants:
//! - [`decode`] is bounded by [`MAX_RECORD_BYTES`] and never panics, so a
//!   damaged or hostile payload is refused, not allocated.
//! - The fast paths produce exactly the bytes [`encode`] gives for the same
//!   record (pinned by the tests below), so a record read back does not
//!   depend on which way it was written.
//!
//! [`WorkerPool`]: super::WorkerPool
//! [`JobRecord`]: super::JobRecord
//! [`ResultRecord`]: super::ResultRecord

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

/// Decode a record; bounded, never panics.
///
/// # Errors
/// [`CodecError::Decode`] for bytes that are not an encoded `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    options()
        .deserialize(bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// A `JobRecord` encoded around already encoded inputs, never attempted:
/// run, row, enqueued_ms (u64 each), prior_attempts 0 (u32), last_error
/// `None` (one byte 0), the number of inputs (u64), then the inputs' bytes.
pub(crate) fn job_bytes(run: u64, row: u64, enqueued_ms: u64, inputs: &[Vec<u8>]) -> Vec<u8> {
    let len = 37 + inputs.iter().map(Vec::len).sum::<usize>();
    let mut b = Vec::with_capacity(len);
    for v in [run, row, enqueued_ms] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(0);
    b.extend_from_slice(&(inputs.len() as u64).to_le_bytes());
    for i in inputs {
        b.extend_from_slice(i);
    }
    b
}

/// A `ResultRecord::Done` encoded around already encoded outcomes: the
/// variant index 1 (u32), the model's name and version (each a u64 length
/// and its bytes), the number of outcomes (u64), then the outcomes' bytes.
pub(crate) fn done_record(model: (&str, &str), outcomes: &[Vec<u8>]) -> Vec<u8> {
    let len = 4 + 16 + model.0.len() + model.1.len() + 8;
    let mut b = Vec::with_capacity(len + outcomes.iter().map(Vec::len).sum::<usize>());
    b.extend_from_slice(&1u32.to_le_bytes());
    for s in [model.0, model.1] {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    b.extend_from_slice(&(outcomes.len() as u64).to_le_bytes());
    for o in outcomes {
        b.extend_from_slice(o);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::super::{JobRecord, ResultRecord, RowOutcome};
    use super::*;

    #[test]
    fn codec_round_trips_and_refuses_garbage() {
        let job = JobRecord::single(1, 2, 3, vec![1.5f32, 2.5]);
        let bytes = encode(&job).unwrap();
        assert_eq!(decode::<JobRecord<Vec<f32>>>(&bytes).unwrap(), job);
        assert!(decode::<JobRecord<Vec<f32>>>(&bytes[..5]).is_err());
        // A length prefix claiming 2^40 elements must fail, not allocate.
        let mut evil = bytes.clone();
        // (run, row, enqueued_ms, prior_attempts, last_error = None, then the
        // number of inputs and the first input's length)
        evil[37..45].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(decode::<JobRecord<Vec<f32>>>(&evil).is_err());
    }

    #[test]
    fn job_bytes_is_the_codec_layout() {
        let input = vec![1.0f32, 2.0];
        let other = vec![3.0f32];
        let direct = encode(&JobRecord {
            run: 7,
            row: 3,
            enqueued_ms: 99,
            prior_attempts: 0,
            last_error: None,
            inputs: vec![input.clone(), other.clone()],
        })
        .unwrap();
        let rows = [encode(&input).unwrap(), encode(&other).unwrap()];
        let composed = job_bytes(7, 3, 99, &rows);
        assert_eq!(direct, composed);
    }

    #[test]
    fn done_record_is_the_codec_layout() {
        let outcome = |row, output: Result<Vec<f32>, String>| RowOutcome {
            run: 9,
            row,
            output,
            attempt: 2,
            finished_ms: 5,
            queue_us: 6,
            infer_us: 7,
            batch_rows: 8,
        };
        let outcomes = vec![
            outcome(1, Ok(vec![0.5, 1.5])),
            outcome(2, Err("bad".into())),
        ];
        let direct = encode(&ResultRecord::Done {
            model: ("m".to_string(), "v1".to_string()),
            outcomes: outcomes.clone(),
        })
        .unwrap();
        let parts: Vec<Vec<u8>> = outcomes.iter().map(|o| encode(o).unwrap()).collect();
        assert_eq!(done_record(("m", "v1"), &parts), direct);
        // A failed outcome written without the output type reads as any.
        let failed = RowOutcome::<()> {
            output: Err("too large".into()),
            ..outcome(3, Ok(vec![])).map_output()
        };
        let bytes = done_record(("m", "v1"), &[encode(&failed).unwrap()]);
        match decode::<ResultRecord<Vec<f32>>>(&bytes).unwrap() {
            ResultRecord::Done { outcomes, .. } => {
                assert_eq!(outcomes[0].output, Err("too large".to_string()));
                assert_eq!(outcomes[0].row, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    impl<O> RowOutcome<O> {
        fn map_output(self) -> RowOutcome<()> {
            RowOutcome {
                run: self.run,
                row: self.row,
                output: Ok(()),
                attempt: self.attempt,
                finished_ms: self.finished_ms,
                queue_us: self.queue_us,
                infer_us: self.infer_us,
                batch_rows: self.batch_rows,
            }
        }
    }
}
