//! The three records an [`InferService`](super::InferService) stores: a
//! [`Job`] (one micro-batch of one run's rows, a message of the jobs
//! queue), its [`JobResult`] (stored with the job's ack by `complete`), and
//! a run's [`Manifest`] (in the runs queue). All are encoded by the one
//! codec ([`super::codec`]).
//!
//! Invariants:
//! - Each record starts with its own magic, so a payload of another
//!   program, of another record kind or of the first worker format (which
//!   had none) is recognised as foreign, never misread as a job.
//! - A job names its model by name, version and input type
//!   ([`ModelKey`]): a worker runs it only on a model registered under that
//!   exact key, so a row is only ever computed by its own run's model.
//! - A job's result has one entry per row of the job, in order; a row
//!   split off into a job of its own is [`RowResult::Moved`] to that job.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::RowError;

/// "LLJ2", "LLR2", "LLM2" read as little-endian u32s.
const JOB_MAGIC: u32 = u32::from_le_bytes(*b"LLJ2");
const RESULT_MAGIC: u32 = u32::from_le_bytes(*b"LLR2");
const MANIFEST_MAGIC: u32 = u32::from_le_bytes(*b"LLM2");

/// Which model a job needs: a registered model computes it only if all
/// three match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ModelKey {
    pub name: String,
    pub version: String,
    /// A hash of the input type's name: two models under one name and
    /// version but different row types are different models.
    pub input_type: u64,
}

impl std::fmt::Display for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} version {} (row type {:016x})",
            self.name, self.version, self.input_type
        )
    }
}

/// One micro-batch of consecutive rows of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Job {
    magic: u32,
    /// The run's tag (see [`Manifest::tag`]).
    pub run: u64,
    /// The position of `rows[0]` in its run; the rest follow in order.
    pub first_row: u64,
    pub model: ModelKey,
    /// When the job was first enqueued, ms since the Unix epoch.
    pub enqueued_ms: u64,
    /// Longest a model call holding these rows may take.
    pub timeout_ms: u64,
    /// The run's deadline (ms since the Unix epoch, 0 for none), kept for
    /// the one-row jobs split off this one.
    pub deadline_ms: u64,
    /// Deliveries of these rows before they were split off a larger job.
    pub prior_attempts: u32,
    /// The error of the last failed attempt, if any.
    pub last_error: Option<RowError>,
    /// Each row encoded by the codec as the model's input type.
    pub rows: Vec<Vec<u8>>,
}

impl Job {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run: u64,
        first_row: u64,
        model: ModelKey,
        enqueued_ms: u64,
        timeout_ms: u64,
        deadline_ms: u64,
        rows: Vec<Vec<u8>>,
    ) -> Job {
        Job {
            magic: JOB_MAGIC,
            run,
            first_row,
            model,
            enqueued_ms,
            timeout_ms,
            deadline_ms,
            prior_attempts: 0,
            last_error: None,
            rows,
        }
    }

    /// Row `i` of this job alone, after `tried` deliveries that ended in
    /// `error`.
    pub fn split_off(&self, i: usize, tried: u32, error: RowError, now_ms: u64) -> Job {
        Job {
            magic: JOB_MAGIC,
            run: self.run,
            first_row: self.first_row + i as u64,
            model: self.model.clone(),
            enqueued_ms: now_ms,
            timeout_ms: self.timeout_ms,
            deadline_ms: self.deadline_ms,
            prior_attempts: tried,
            last_error: Some(error),
            rows: vec![self.rows[i].clone()],
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// The job in `bytes`, or `None` for a payload that is not one (another
    /// program's, or the first worker format's).
    pub fn decode(bytes: &[u8]) -> Option<Job> {
        codec::decode::<Job>(bytes)
            .ok()
            .filter(|j| j.magic == JOB_MAGIC)
    }
}

/// What became of one row of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RowResult {
    /// Computed: the output encoded as the model's output type, the model
    /// time of the call that held it (µs) and that call's rows.
    Done {
        output: Vec<u8>,
        infer_us: u64,
        batch_rows: u32,
    },
    /// Failed for good.
    Failed(RowError),
    /// Split off into a job of its own, with this id.
    Moved(u64),
}

/// A job's outcome, stored with its ack by `complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobResult {
    magic: u32,
    /// The model that computed it (name, version and the SHA-256 of its
    /// file, empty if none; once per job).
    pub model_name: String,
    pub model_version: String,
    pub model_sha: String,
    /// The service's pipeline version and the worker that ran it.
    pub pipeline_version: String,
    pub partition: String,
    /// Deliveries of these rows, this one included.
    pub attempt: u32,
    /// When the job was settled, ms since the Unix epoch.
    pub finished_ms: u64,
    /// From enqueue to the model call, µs.
    pub queue_us: u64,
    /// Decoding the job, ns.
    pub decode_ns: u64,
    /// One entry per row of the job, in order.
    pub rows: Vec<RowResult>,
}

/// Who computed a job and when: what a [`JobResult`] says besides its
/// rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Provenance {
    pub model_name: String,
    pub model_version: String,
    pub model_sha: String,
    pub pipeline_version: String,
    pub partition: String,
    pub attempt: u32,
    pub finished_ms: u64,
    pub queue_us: u64,
    pub decode_ns: u64,
}

impl JobResult {
    pub fn new(p: Provenance, rows: Vec<RowResult>) -> JobResult {
        JobResult {
            magic: RESULT_MAGIC,
            model_name: p.model_name,
            model_version: p.model_version,
            model_sha: p.model_sha,
            pipeline_version: p.pipeline_version,
            partition: p.partition,
            attempt: p.attempt,
            finished_ms: p.finished_ms,
            queue_us: p.queue_us,
            decode_ns: p.decode_ns,
            rows,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<JobResult, CodecError> {
        let r = codec::decode::<JobResult>(bytes)?;
        if r.magic != RESULT_MAGIC {
            return Err(CodecError::Decode("not a job result".into()));
        }
        Ok(r)
    }
}

/// One job of a run: its id, its first row, its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobSpan {
    pub id: u64,
    pub first_row: u64,
    pub rows: u32,
}

/// A run as stored in the runs queue: what it computes and where its jobs
/// are. Written once every job is enqueued (and synced under
/// `Immediate`), so a run that has a manifest has all its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    magic: u32,
    /// The tag its jobs carry (unique per submission).
    pub tag: u64,
    pub model: ModelKey,
    pub rows: u64,
    /// A hash of the model version and the encoded rows: a key reused for
    /// other rows is refused.
    pub content: u64,
    pub priority: u8,
    pub deadline_ms: u64,
    pub created_ms: u64,
    pub jobs: Vec<JobSpan>,
}

impl Manifest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tag: u64,
        model: ModelKey,
        rows: u64,
        content: u64,
        priority: u8,
        deadline_ms: u64,
        created_ms: u64,
        jobs: Vec<JobSpan>,
    ) -> Manifest {
        Manifest {
            magic: MANIFEST_MAGIC,
            tag,
            model,
            rows,
            content,
            priority,
            deadline_ms,
            created_ms,
            jobs,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, CodecError> {
        let m = codec::decode::<Manifest>(bytes)?;
        if m.magic != MANIFEST_MAGIC {
            return Err(CodecError::Decode("not a run manifest".into()));
        }
        Ok(m)
    }

    /// Bytes a manifest of `jobs` jobs takes, near enough to refuse a run
    /// too large for one before anything is written.
    pub fn size_for(jobs: usize, model: &ModelKey) -> usize {
        128 + model.name.len() + model.version.len() + jobs * 20
    }
}

/// A 64-bit hash of the model version and the encoded rows, eight bytes at
/// a time. Stable across platforms and versions (runs stored on disk are
/// compared by it).
pub(crate) fn content_hash(version: &str, rows: &[Vec<u8>]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        h = (h ^ bytes.len() as u64).wrapping_mul(K);
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        h = (h ^ u64::from_le_bytes(tail))
            .wrapping_mul(K)
            .rotate_left(29);
    };
    eat(version.as_bytes());
    for r in rows {
        eat(r);
    }
    // Final mix so every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ModelKey {
        ModelKey {
            name: "m".into(),
            version: "1".into(),
            input_type: 7,
        }
    }

    #[test]
    fn content_hashes_tell_tables_apart() {
        let rows = |v: &[&[u8]]| v.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let a = content_hash("m1", &rows(&[b"abc", b"defghijkl"]));
        assert_eq!(a, content_hash("m1", &rows(&[b"abc", b"defghijkl"])));
        // Another model version, row boundary, order, or a byte: another run.
        assert_ne!(a, content_hash("m2", &rows(&[b"abc", b"defghijkl"])));
        assert_ne!(a, content_hash("m1", &rows(&[b"abcd", b"efghijkl"])));
        assert_ne!(a, content_hash("m1", &rows(&[b"defghijkl", b"abc"])));
        assert_ne!(a, content_hash("m1", &rows(&[b"abc", b"defghijkm"])));
        assert_ne!(
            content_hash("", &rows(&[b""])),
            content_hash("", &rows(&[b"", b""]))
        );
        // Pinned: hashes name runs stored on disk.
        assert_eq!(content_hash("m1", &rows(&[b"abc"])), 0xbbb4_7a03_ea44_c141);
    }

    #[test]
    fn records_round_trip_and_refuse_each_other() {
        let job = Job::new(1, 10, key(), 5, 1000, 0, vec![vec![1, 2], vec![3]]);
        let jb = job.encode().unwrap();
        assert_eq!(Job::decode(&jb), Some(job.clone()));
        let p = Provenance {
            model_name: "m".into(),
            model_version: "1".into(),
            model_sha: "ab".into(),
            pipeline_version: "p".into(),
            partition: "worker-0".into(),
            attempt: 1,
            finished_ms: 9,
            queue_us: 3,
            decode_ns: 2,
        };
        let r = JobResult::new(p, vec![RowResult::Moved(4)]);
        let rb = r.encode().unwrap();
        assert_eq!(JobResult::decode(&rb).unwrap(), r);
        let m = Manifest::new(
            1,
            key(),
            2,
            3,
            4,
            0,
            5,
            vec![JobSpan {
                id: 1,
                first_row: 0,
                rows: 2,
            }],
        );
        let mb = m.encode().unwrap();
        assert_eq!(Manifest::decode(&mb).unwrap(), m);
        // Each kind refuses the others and arbitrary bytes.
        assert_eq!(Job::decode(&rb), None);
        assert_eq!(Job::decode(&mb), None);
        assert_eq!(Job::decode(b"not a job at all, just bytes"), None);
        assert!(JobResult::decode(&jb).is_err());
        assert!(Manifest::decode(&jb).is_err());
        assert!(Manifest::decode(&rb).is_err());
    }

    #[test]
    fn manifest_size_estimate_covers_the_encoding() {
        let jobs: Vec<JobSpan> = (0..1000)
            .map(|i| JobSpan {
                id: i,
                first_row: i * 64,
                rows: 64,
            })
            .collect();
        let m = Manifest::new(1, key(), 64_000, 3, 4, 0, 5, jobs);
        assert!(m.encode().unwrap().len() <= Manifest::size_for(1000, &key()));
    }
}
