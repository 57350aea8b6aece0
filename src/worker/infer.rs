//! `parallel_infer`: a whole table in, results out in input order, with
//! its options ([`InferOptions`], [`Column`]) and its result table
//! ([`InferResult`], [`InferRow`], [`Metadata`]).
//!
//! Invariants:
//! - A run's id is a hash of the model version and the encoded rows, so the
//!   same table on the same model in the same directory is the same run: a
//!   call after a crash collects the results already stored rather than
//!   computing those rows again.
//! - A run is marked started only after all its jobs are enqueued and
//!   synced, so a resumed run never enqueues its jobs twice.
//! - The call holds every result record of its run leased and acks them
//!   only as it returns them; a row's first result wins and later duplicates are dropped,
//!   so each row comes back exactly once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codec::{self, job_bytes};
use super::pool::{PoolOptions, WorkerPool};
use super::{wall_ms, InferError, Model, ResultRecord, RowOutcome};
use crate::storage::{MemoryStorage, Storage};
use crate::{Durability, Error, Queue, QueueOptions, Receipt, Result, Timestamp};

/// A column of the result table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Column {
    /// When the row finished (always present).
    Time,
    /// The input row (`in.*`).
    Input,
    /// The output row or its error (`out.*`).
    Output,
    /// `anomaly.count` and the names of the validations that flagged.
    Anomaly,
    /// Timings, model name and hash, attempt.
    Metadata,
}

/// A validation: a name and a predicate that flags an output.
type Validation<O> = (String, Arc<dyn Fn(&O) -> bool + Send + Sync>);

/// Options of [`parallel_infer`].
#[derive(Clone)]
pub struct InferOptions<O> {
    pub(crate) pool: PoolOptions,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) durability: Durability,
    pub(crate) columns: Vec<Column>,
    pub(crate) validations: Vec<Validation<O>>,
    pub(crate) failure_budget: Option<f64>,
}

impl<O> std::fmt::Debug for InferOptions<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferOptions")
            .field("pool", &self.pool)
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("columns", &self.columns)
            .field(
                "validations",
                &self.validations.iter().map(|v| &v.0).collect::<Vec<_>>(),
            )
            .field("failure_budget", &self.failure_budget)
            .finish()
    }
}

impl<O> Default for InferOptions<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O> InferOptions<O> {
    /// The pool's defaults ([`PoolOptions::new`]), queues in memory, every
    /// column, no validations, no failure budget.
    pub fn new() -> Self {
        InferOptions {
            pool: PoolOptions::new(),
            dir: None,
            durability: Durability::Immediate,
            columns: vec![
                Column::Time,
                Column::Input,
                Column::Output,
                Column::Anomaly,
                Column::Metadata,
            ],
            validations: Vec::new(),
            failure_budget: None,
        }
    }

    /// Worker and batching options.
    #[must_use]
    pub fn pool(mut self, pool: PoolOptions) -> Self {
        self.pool = pool;
        self
    }

    /// Keep the job and result queues in `dir` (subdirectories `jobs` and
    /// `results`) so that a caller that crashed can call again with the
    /// same rows and collect what was already computed. Default = in memory.
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Durability of the queues in `dir`. Default = `Immediate`.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Return only these columns (`time` is always returned).
    #[must_use]
    pub fn dataset(mut self, columns: &[Column]) -> Self {
        self.columns = columns.to_vec();
        self
    }

    /// Return every column except these (`time` is always returned).
    #[must_use]
    pub fn dataset_exclude(mut self, columns: &[Column]) -> Self {
        self.columns.retain(|c| !columns.contains(c));
        self
    }

    /// Add a named validation; each output it flags counts in
    /// `anomaly_count` and is reported by name.
    #[must_use]
    pub fn validation(
        mut self,
        name: &str,
        flags: impl Fn(&O) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.validations.push((name.to_string(), Arc::new(flags)));
        self
    }

    /// Stop early with [`InferError::FailureBudget`] once more than this share
    /// (0.0..=1.0) of the rows failed.
    #[must_use]
    pub fn failure_budget(mut self, share: f64) -> Self {
        self.failure_budget = Some(share);
        self
    }
}

/// Timings and provenance of one row.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Metadata {
    /// The model's name.
    pub model_name: String,
    /// The model's version (file hash).
    pub model_version: String,
    /// Which delivery produced the result (1 on the first).
    pub attempt: u32,
    /// Time in the queue before a worker took the row.
    pub queue_time: Duration,
    /// Time the model took for the batch holding this row.
    pub infer_time: Duration,
    /// Rows in that batch.
    pub batch_rows: u32,
}

/// One row of the result table; columns not asked for are `None`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InferRow<I, O> {
    /// When the row finished.
    pub time: Timestamp,
    /// The input row.
    pub input: Option<I>,
    /// The output, or the error of a row that failed past its retries.
    pub output: Option<std::result::Result<O, String>>,
    /// How many validations flagged the output.
    pub anomaly_count: Option<u32>,
    /// The names of the validations that flagged it.
    pub anomalies: Option<Vec<String>>,
    /// Timings and provenance.
    pub metadata: Option<Metadata>,
}

/// The result table and run totals.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InferResult<I, O> {
    /// One row per input row, in input order.
    pub rows: Vec<InferRow<I, O>>,
    /// Rows that failed past their retries.
    pub failed: usize,
    /// Rows whose results were already stored by an earlier call.
    pub resumed: usize,
    /// Wall time of the call.
    pub elapsed: Duration,
    /// The run's id (a hash of the model version and the rows).
    pub run: u64,
}

/// Run `model` over every row of `rows` through durable job and result
/// queues and a pool of workers; return the results in input order.
///
/// ```
/// use std::sync::Arc;
/// use lanelog::worker::{parallel_infer, InferError, InferOptions, Model, ModelError};
///
/// struct Double;
/// impl Model for Double {
///     type Input = f32;
///     type Output = f32;
///     fn name(&self) -> &str { "double" }
///     fn version(&self) -> &str { "1" }
///     fn infer(&self, rows: &[f32]) -> Result<Vec<f32>, ModelError> {
///         Ok(rows.iter().map(|x| x * 2.0).collect())
///     }
/// }
///
/// # fn main() -> Result<(), InferError> {
/// let out = parallel_infer(Arc::new(Double), &[1.0, 2.0, 3.0], &InferOptions::new())?;
/// let values: Vec<f32> = out.rows.iter().map(|r| *r.output.as_ref().unwrap().as_ref().unwrap()).collect();
/// assert_eq!(values, vec![2.0, 4.0, 6.0]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`InferError::InvalidArgument`] for options out of range;
/// [`InferError::Codec`] for a row too large to encode;
/// [`InferError::FailureBudget`] when too many rows failed;
/// [`InferError::Queue`] for queue errors ([`Error::Io`], [`Error::Locked`],
/// ...); [`InferError::Spawn`] and [`InferError::Panicked`] from the pool.
pub fn parallel_infer<M: Model>(
    model: Arc<M>,
    rows: &[M::Input],
    opts: &InferOptions<M::Output>,
) -> Result<InferResult<M::Input, M::Output>, InferError> {
    opts.pool.validate()?;
    if let Some(b) = opts.failure_budget {
        if !(0.0..=1.0).contains(&b) {
            return Err(InferError::InvalidArgument(
                "failure_budget must be in 0.0..=1.0".into(),
            ));
        }
    }
    let started = Instant::now();
    let encoded: Vec<Vec<u8>> = rows
        .iter()
        .map(codec::encode)
        .collect::<std::result::Result<_, _>>()?;
    let run = run_id(model.version(), &encoded);
    let largest = encoded.iter().map(Vec::len).max().unwrap_or(0);
    let chunk = chunk_rows(opts.pool.max_batch, largest);
    let total = encoded.iter().map(|r| r.len() + 8).sum::<usize>();
    let segment = segment_size_for(chunk * (largest + 8) + 64, total);
    let (jobs, results) = open_queues(opts, segment)?;
    let mut collector = Collector::<M::Output>::new(run, rows.len());
    collector.drain(&results, Duration::ZERO)?;
    let resumed = collector.done();
    if !collector.started && collector.done() < rows.len() {
        enqueue_jobs(&jobs, run, &encoded, &collector, segment, chunk)?;
        jobs.sync()?;
        let start = codec::encode(&ResultRecord::<M::Output>::Started {
            run,
            rows: rows.len() as u64,
        })?;
        results.enqueue(&start, 0)?;
    }
    let pool_opts = opts.pool.clone().rows_per_job(chunk);
    let pool = WorkerPool::start(model, jobs.clone(), results.clone(), pool_opts)?;
    let budget = opts
        .failure_budget
        .map(|b| (b * rows.len() as f64).floor() as usize);
    while collector.done() < rows.len() {
        collector.drain(&results, Duration::from_millis(20))?;
        if budget.is_some_and(|b| collector.failed > b) {
            let failed = collector.failed;
            pool.shutdown()?;
            collector.release(&results)?;
            return Err(InferError::FailureBudget {
                failed,
                rows: rows.len(),
            });
        }
    }
    pool.shutdown()?;
    let outcomes = collector.finish(&results)?;
    let failed = outcomes.iter().filter(|o| o.0.output.is_err()).count();
    let rows_out = outcomes
        .into_iter()
        .zip(rows)
        .map(|(o, input)| make_row(o, input, opts))
        .collect();
    Ok(InferResult {
        rows: rows_out,
        failed,
        resumed,
        elapsed: started.elapsed(),
        run,
    })
}

/// A 64-bit hash of the model version and the encoded rows, eight bytes at
/// a time: the same table on the same model is the same run, so a resumed
/// call finds its results. Stable across platforms and versions (it names
/// runs stored on disk).
fn run_id(version: &str, rows: &[Vec<u8>]) -> u64 {
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

/// Most bytes of inputs per job.
const JOB_BYTES: usize = 64 << 10;

/// Rows per job: a micro-batch (`max_batch`), fewer if its rows are large.
fn chunk_rows(max_batch: usize, largest_row: usize) -> usize {
    max_batch.min(JOB_BYTES / largest_row.max(1)).max(1)
}

/// Segments of a run's queues: eight of the largest job at least, and a
/// quarter of the table's bytes (fewer segments to make while the jobs are
/// enqueued), but no bigger than that needs: a fresh queue writes its whole
/// first segment of zeros, a cost every call on a new directory pays.
fn segment_size_for(largest_job: usize, table_bytes: usize) -> u64 {
    let want = (largest_job as u64 + 64)
        .saturating_mul(8)
        .max(table_bytes as u64 / 4)
        .next_power_of_two();
    want.clamp(crate::config::MIN_SEGMENT_SIZE, 64 << 20)
}

fn open_queues<O>(opts: &InferOptions<O>, segment: u64) -> Result<(Queue, Queue)> {
    let queue_opts = |d: Durability| {
        QueueOptions::new()
            .durability(d)
            .max_deliveries(0)
            .segment_size(segment)
            .journal_file_size(256 << 10)
            // A table's run rarely fills one segment: making the next one
            // ahead would write 5 MiB of zeros per queue for nothing.
            .prepare_ahead(false)
    };
    match &opts.dir {
        Some(dir) => {
            // Makes `dir` itself if missing (not its parents).
            crate::storage::DiskStorage::open(dir).map_err(|e| Error::BadDirectory {
                path: dir.clone(),
                detail: e.to_string(),
            })?;
            // Job acks need not be durable: a job whose ack is lost runs
            // again and its duplicate result is recognised. Enqueued jobs
            // are made durable by one `sync` before the run is marked
            // started; results use the durability asked for.
            let jobs = queue_opts(Durability::None).open(dir.join("jobs"))?;
            let results = queue_opts(opts.durability).open(dir.join("results"))?;
            Ok((jobs, results))
        }
        None => {
            let mem = |_| -> Arc<dyn Storage> { Arc::new(MemoryStorage::new()) };
            let jobs = queue_opts(Durability::None).open_storage(mem(()))?;
            let results = queue_opts(Durability::None).open_storage(mem(()))?;
            Ok((jobs, results))
        }
    }
}

/// The rows not done yet, as jobs of up to `chunk` consecutive rows,
/// enqueued in batches of at most a quarter segment (a batch is one write
/// into one segment, and a larger one is refused).
fn enqueue_jobs<O: serde::de::DeserializeOwned>(
    jobs: &Queue,
    run: u64,
    encoded: &[Vec<u8>],
    have: &Collector<O>,
    segment: u64,
    chunk: usize,
) -> Result<()> {
    let batch_bytes = (segment / 4) as usize;
    let now = wall_ms();
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    let flush = |payloads: &mut Vec<Vec<u8>>| -> Result<()> {
        if !payloads.is_empty() {
            let refs: Vec<(&[u8], u8)> = payloads.iter().map(|p| (&p[..], 0)).collect();
            jobs.enqueue_batch(&refs)?;
            payloads.clear();
        }
        Ok(())
    };
    let mut row = 0;
    while row < encoded.len() {
        if have.has(row) {
            row += 1;
            continue;
        }
        let end = (row..encoded.len().min(row + chunk))
            .find(|&r| have.has(r))
            .unwrap_or_else(|| encoded.len().min(row + chunk));
        let job = job_bytes(run, row as u64, now, &encoded[row..end]);
        if bytes + job.len() > batch_bytes || payloads.len() >= 4096 {
            flush(&mut payloads)?;
            bytes = 0;
        }
        bytes += job.len();
        payloads.push(job);
        row = end;
    }
    flush(&mut payloads)
}

/// A model's name and version, shared by the rows it computed.
type ModelId = Arc<(String, String)>;

/// Gathers this run's outcomes from the results queue, holding every
/// result record leased until the call returns (so a crashed caller finds
/// them again), and holding other runs' results aside to give back.
struct Collector<O> {
    run: u64,
    outcomes: Vec<Option<(RowOutcome<O>, ModelId)>>,
    done: usize,
    failed: usize,
    started: bool,
    mine: Vec<Receipt>,
    others: Vec<Receipt>,
}

impl<O: serde::de::DeserializeOwned> Collector<O> {
    fn new(run: u64, rows: usize) -> Collector<O> {
        Collector {
            run,
            outcomes: std::iter::repeat_with(|| None).take(rows).collect(),
            done: 0,
            failed: 0,
            started: false,
            mine: Vec::new(),
            others: Vec::new(),
        }
    }

    fn done(&self) -> usize {
        self.done
    }

    fn has(&self, row: usize) -> bool {
        self.outcomes[row].is_some()
    }

    /// Take every result available now (or within `wait` for the first).
    fn drain(&mut self, results: &Queue, wait: Duration) -> Result<()> {
        let take = crate::DequeueOptions::new()
            .max(1024)
            .wait(wait)
            .visibility(Duration::from_secs(3600));
        loop {
            let batch = results.dequeue_with(&take)?;
            if batch.is_empty() {
                return Ok(());
            }
            for d in batch {
                match codec::decode::<ResultRecord<O>>(&d.payload) {
                    Ok(ResultRecord::Started { run, .. }) if run == self.run => {
                        self.started = true;
                        self.mine.push(d.receipt);
                    }
                    Ok(ResultRecord::Done { model, outcomes })
                        if outcomes.first().is_some_and(|o| o.run == self.run) =>
                    {
                        let model = Arc::new(model);
                        for o in outcomes {
                            let Some(slot) = self.outcomes.get_mut(o.row as usize) else {
                                continue;
                            };
                            if o.run != self.run || slot.is_some() {
                                // A row computed twice (its worker died
                                // after storing the result): keep the first.
                                continue;
                            }
                            self.done += 1;
                            if o.output.is_err() {
                                self.failed += 1;
                            }
                            *slot = Some((o, model.clone()));
                        }
                        // Acked with the others when the call returns.
                        self.mine.push(d.receipt);
                    }
                    _ => self.others.push(d.receipt),
                }
            }
            if wait.is_zero() {
                continue;
            }
            return Ok(());
        }
    }

    /// The outcomes in row order; acks every record of this run (the call
    /// is about to return them) and gives other runs' results back.
    fn finish(mut self, results: &Queue) -> Result<Vec<(RowOutcome<O>, ModelId)>, InferError> {
        let out = std::mem::take(&mut self.outcomes)
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| InferError::InvalidArgument("a row has no result".into()))?;
        results.ack_batch(&self.mine)?;
        for r in std::mem::take(&mut self.others) {
            results.nack(r, Duration::ZERO)?;
        }
        Ok(out)
    }

    /// Give every held result back (an early stop).
    fn release(self, results: &Queue) -> Result<()> {
        for r in self.mine.into_iter().chain(self.others) {
            results.nack(r, Duration::ZERO)?;
        }
        Ok(())
    }
}

fn make_row<I: Clone, O: Clone>(
    (o, model): (RowOutcome<O>, ModelId),
    input: &I,
    opts: &InferOptions<O>,
) -> InferRow<I, O> {
    let want = |c: Column| opts.columns.contains(&c);
    let flagged: Vec<String> = match &o.output {
        Ok(out) => opts
            .validations
            .iter()
            .filter(|(_, f)| f(out))
            .map(|(n, _)| n.clone())
            .collect(),
        Err(_) => Vec::new(),
    };
    InferRow {
        time: Timestamp(o.finished_ms),
        input: want(Column::Input).then(|| input.clone()),
        anomaly_count: want(Column::Anomaly).then_some(flagged.len() as u32),
        anomalies: want(Column::Anomaly).then_some(flagged),
        metadata: want(Column::Metadata).then(|| Metadata {
            model_name: model.0.clone(),
            model_version: model.1.clone(),
            attempt: o.attempt,
            queue_time: Duration::from_micros(o.queue_us),
            infer_time: Duration::from_micros(o.infer_us),
            batch_rows: o.batch_rows,
        }),
        output: want(Column::Output).then_some(o.output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_tell_tables_apart() {
        let rows = |v: &[&[u8]]| v.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let a = run_id("m1", &rows(&[b"abc", b"defghijkl"]));
        assert_eq!(a, run_id("m1", &rows(&[b"abc", b"defghijkl"])));
        // Another model version, row boundary, order, or a byte: another run.
        assert_ne!(a, run_id("m2", &rows(&[b"abc", b"defghijkl"])));
        assert_ne!(a, run_id("m1", &rows(&[b"abcd", b"efghijkl"])));
        assert_ne!(a, run_id("m1", &rows(&[b"defghijkl", b"abc"])));
        assert_ne!(a, run_id("m1", &rows(&[b"abc", b"defghijkm"])));
        assert_ne!(run_id("", &rows(&[b""])), run_id("", &rows(&[b"", b""])));
        // Pinned: run ids name results stored on disk.
        assert_eq!(run_id("m1", &rows(&[b"abc"])), 0xbbb4_7a03_ea44_c141);
    }
}
