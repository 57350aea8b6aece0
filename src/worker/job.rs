//! The three records an [`InferService`](super::InferService) stores: a
//! [`Job`] (one micro-batch of one run's rows, a message of the jobs
//! queue), its [`JobResult`] (stored with the job's ack by `complete`), and
//! a run's [`Manifest`] (in the runs queue). All are encoded by the one
//! codec ([`super::codec`]).
//!
//! A job's rows and a result's outputs are each one [`RowBlock`] (a
//! tensor for rows of numbers), so a job costs one allocation whatever its
//! rows, and a result names its model once.
//!
//! Invariants:
//! - Each record starts with its own magic, so a payload of another
//!   program, of another record kind or of the first worker format (which
//!   had none) is recognised as foreign, never misread as a job.
//! - A job names its model by name, version and input type
//!   ([`ModelKey`]): a worker runs it only on a model registered under that
//!   exact key, so a row is only ever computed by its own run's model.
//! - A job's result covers every row of the job: each row is computed (its
//!   output in `outputs`, in row order) unless a note says it failed or
//!   was split off into a job of its own ([`RowNote::Moved`]).
//! - Blocks read back are checked ([`RowBlock::check`]) before use.

use serde::{Deserialize, Serialize};

use super::codec::{self, CodecError};
use super::rows::RowBlock;
use super::RowError;

/// "LLJ3", "LLR3", "LLM2" read as little-endian u32s. Version 3 of jobs
/// and results holds rows as blocks (version 2, one encoding per row, is
/// read as foreign: held or parked, see `Unclaimed`).
const JOB_MAGIC: u32 = u32::from_le_bytes(*b"LLJ3");
const RESULT_MAGIC: u32 = u32::from_le_bytes(*b"LLR3");
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
    /// The rows, as the model's input type.
    pub rows: RowBlock,
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
        rows: RowBlock,
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

    /// Row `i` of this job (`row`, a block of that row alone) as a job of
    /// its own, after `tried` deliveries that ended in `error`.
    pub fn split_off(
        &self,
        row: RowBlock,
        i: usize,
        tried: u32,
        error: RowError,
        now_ms: u64,
    ) -> Job {
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
            rows: row,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// The job in `bytes`, or `None` for a payload that is not one (another
    /// program's, or an earlier worker format's) or whose rows are damaged.
    pub fn decode(bytes: &[u8]) -> Option<Job> {
        codec::decode::<Job>(bytes)
            .ok()
            .filter(|j| j.magic == JOB_MAGIC && j.rows.check().is_ok())
    }
}

/// A row of a job not computed by the job's model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum RowNote {
    /// Failed for good.
    Failed(RowError),
    /// Split off into a job of its own, with this id.
    Moved(u64),
    /// Computed alone (its batch's call failed): its output is in
    /// `outputs` as the others', its model time (µs) is its own.
    Alone { infer_us: u64 },
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
    /// Rows of the job.
    pub rows: u32,
    /// The model time of the call that computed the rows (µs) and that
    /// call's rows.
    pub infer_us: u64,
    pub batch_rows: u32,
    /// The outputs of the rows computed, in row order.
    pub outputs: RowBlock,
    /// The rows not computed by that call, by row, ascending.
    pub notes: Vec<(u32, RowNote)>,
}

/// What a job's result says of one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RowFate<'a> {
    /// Output `index` of `outputs`, computed in `infer_us` by a call of
    /// `batch_rows` rows.
    Done {
        index: usize,
        infer_us: u64,
        batch_rows: u32,
    },
    Failed(&'a RowError),
    Moved(u64),
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

/// A job's rows as computed: the outputs of the rows done, and notes for
/// the others (see [`JobResult`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Computed {
    pub rows: u32,
    pub infer_us: u64,
    pub batch_rows: u32,
    pub outputs: RowBlock,
    pub notes: Vec<(u32, RowNote)>,
}

impl Computed {
    /// Set the note of row `row` (a row split off: its child's id, or why
    /// it failed after all).
    pub fn note(&mut self, row: usize, note: RowNote) {
        let row = row as u32;
        match self.notes.binary_search_by_key(&row, |(at, _)| *at) {
            Ok(i) => self.notes[i].1 = note,
            Err(i) => self.notes.insert(i, (row, note)),
        }
    }
}

impl JobResult {
    pub fn new(p: Provenance, c: Computed) -> JobResult {
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
            rows: c.rows,
            infer_us: c.infer_us,
            batch_rows: c.batch_rows,
            outputs: c.outputs,
            notes: c.notes,
        }
    }

    /// What became of each row, in order.
    pub fn fates(&self) -> impl Iterator<Item = RowFate<'_>> + '_ {
        let mut notes = self.notes.iter().peekable();
        let mut next_output = 0;
        (0..self.rows).map(move |row| {
            let note = notes.next_if(|(at, _)| *at == row).map(|(_, n)| n);
            match note {
                Some(RowNote::Failed(e)) => RowFate::Failed(e),
                Some(RowNote::Moved(id)) => RowFate::Moved(*id),
                alone => {
                    let index = next_output;
                    next_output += 1;
                    match alone {
                        Some(RowNote::Alone { infer_us }) => RowFate::Done {
                            index,
                            infer_us: *infer_us,
                            batch_rows: 1,
                        },
                        _ => RowFate::Done {
                            index,
                            infer_us: self.infer_us,
                            batch_rows: self.batch_rows,
                        },
                    }
                }
            }
        })
    }

    /// The model times of the calls that computed the rows, as (µs, rows).
    pub fn infer_times(&self) -> Vec<(u64, u64)> {
        let alone: Vec<(u64, u64)> = self
            .notes
            .iter()
            .filter_map(|(_, n)| match n {
                RowNote::Alone { infer_us } => Some((*infer_us, 1)),
                _ => None,
            })
            .collect();
        let batched = self.outputs.len() as u64 - alone.len() as u64;
        let mut times = alone;
        if batched > 0 {
            times.push((self.infer_us, batched));
        }
        times
    }

    /// Rows done and rows failed.
    pub fn counts(&self) -> (u64, u64) {
        let failed = self
            .notes
            .iter()
            .filter(|(_, n)| matches!(n, RowNote::Failed(_)))
            .count() as u64;
        (self.outputs.len() as u64, failed)
    }

    /// Fail the row of the largest output (it cannot be stored: the
    /// result went over `max` bytes); `false` when no output is left.
    pub fn fail_largest(&mut self, max: usize) -> bool {
        let Some((len, largest)) = (0..self.outputs.len())
            .map(|i| (self.outputs.row_bytes(i).len(), i))
            .max()
        else {
            return false;
        };
        let Some(row) = self.fates().enumerate().find_map(|(row, f)| match f {
            RowFate::Done { index, .. } if index == largest => Some(row as u32),
            _ => None,
        }) else {
            return false;
        };
        let keep: Vec<bool> = (0..self.outputs.len()).map(|i| i != largest).collect();
        self.outputs = self.outputs.select(&keep);
        let error = RowError::new(
            super::ErrorKind::Permanent,
            format!("its output of {len} bytes is too large to store (the queue takes at most {max} bytes per result)"),
        );
        self.notes.retain(|(at, _)| *at != row);
        let at = self.notes.partition_point(|(at, _)| *at < row);
        self.notes.insert(at, (row, RowNote::Failed(error)));
        true
    }

    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<JobResult, CodecError> {
        let r = codec::decode::<JobResult>(bytes)?;
        if r.magic != RESULT_MAGIC {
            return Err(CodecError::Decode("not a job result".into()));
        }
        r.outputs.check()?;
        let done_notes = r
            .notes
            .iter()
            .filter(|(_, n)| matches!(n, RowNote::Alone { .. }))
            .count();
        let undone = r.notes.len() - done_notes;
        if r.notes.windows(2).any(|w| w[0].0 >= w[1].0)
            || r.notes.last().is_some_and(|(at, _)| *at >= r.rows)
            || r.outputs.len() + undone != r.rows as usize
        {
            return Err(CodecError::Decode(
                "a job result whose rows do not add up".into(),
            ));
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
        Manifest::size_with_names(jobs, model.name.len() + model.version.len())
    }

    /// As [`Manifest::size_for`], for a model whose name and version take
    /// `names` bytes together.
    pub fn size_with_names(jobs: usize, names: usize) -> usize {
        128 + names + jobs * 20
    }
}

/// A 64-bit hash (XXH3) of the model version and the rows' block. Stable
/// across platforms and versions (runs stored on disk are compared by
/// it).
pub(crate) fn content_hash(version: &str, rows: &RowBlock) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(version.len() as u64).to_le_bytes());
    h.update(version.as_bytes());
    rows.hash_with(|bytes| h.update(bytes));
    h.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The content hash of one row `abc` (as a `Vec<u8>`, a tensor of u8)
    /// for model version `m1`.
    const PINNED: u64 = 0x8682_5961_2d0b_a91b;

    fn key() -> ModelKey {
        ModelKey {
            name: "m".into(),
            version: "1".into(),
            input_type: 7,
        }
    }

    fn block(rows: &[&[u8]]) -> RowBlock {
        RowBlock::encode(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn content_hashes_tell_tables_apart() {
        let a = content_hash("m1", &block(&[b"abc", b"defghijkl"]));
        assert_eq!(a, content_hash("m1", &block(&[b"abc", b"defghijkl"])));
        // Another model version, row boundary, order, or a byte: another run.
        assert_ne!(a, content_hash("m2", &block(&[b"abc", b"defghijkl"])));
        assert_ne!(a, content_hash("m1", &block(&[b"abcd", b"efghijkl"])));
        assert_ne!(a, content_hash("m1", &block(&[b"defghijkl", b"abc"])));
        assert_ne!(a, content_hash("m1", &block(&[b"abc", b"defghijkm"])));
        assert_ne!(
            content_hash("", &block(&[b""])),
            content_hash("", &block(&[b"", b""]))
        );
        let t = |rows: &[Vec<f32>]| content_hash("m", &RowBlock::encode(rows).unwrap());
        assert_ne!(t(&[vec![1.0, 2.0]]), t(&[vec![1.0], vec![2.0]]));
        // Pinned: hashes name runs stored on disk.
        assert_eq!(content_hash("m1", &block(&[b"abc"])), PINNED);
    }

    #[test]
    fn records_round_trip_and_refuse_each_other() {
        let job = Job::new(1, 10, key(), 5, 1000, 0, block(&[&[1, 2], &[3]]));
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
        let computed = Computed {
            rows: 3,
            infer_us: 40,
            batch_rows: 3,
            outputs: RowBlock::encode(&[7u64, 8]).unwrap(),
            notes: vec![(0, RowNote::Moved(4)), (2, RowNote::Alone { infer_us: 5 })],
        };
        let r = JobResult::new(p, computed);
        let rb = r.encode().unwrap();
        let back = JobResult::decode(&rb).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.fates().collect::<Vec<_>>(),
            vec![
                RowFate::Moved(4),
                RowFate::Done {
                    index: 0,
                    infer_us: 40,
                    batch_rows: 3
                },
                RowFate::Done {
                    index: 1,
                    infer_us: 5,
                    batch_rows: 1
                },
            ]
        );
        assert_eq!(back.counts(), (2, 0));
        let mut shrunk = back.clone();
        assert!(shrunk.fail_largest(10));
        assert_eq!(shrunk.counts(), (1, 1));
        assert_eq!(
            shrunk
                .fates()
                .filter(|f| matches!(f, RowFate::Failed(_)))
                .count(),
            1
        );
        assert!(JobResult::decode(&shrunk.encode().unwrap()).is_ok());
        // A result whose rows do not add up is refused.
        let mut wrong = r.clone();
        wrong.rows = 5;
        assert!(JobResult::decode(&wrong.encode().unwrap()).is_err());
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
