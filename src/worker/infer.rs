//! `parallel_infer`: a whole table in, results out in input order, with
//! its options ([`InferOptions`], [`Column`]) and its result table
//! ([`InferResult`], [`InferRow`]). It is a submit and a wait on an
//! [`InferService`](super::InferService) opened for the call.
//!
//! Invariants:
//! - A call's run key is a hash of the model version and the encoded rows,
//!   so the same table on the same model in the same directory is the same
//!   run: a call after a crash (or a second call) collects the results
//!   already stored rather than computing those rows again, for as long as
//!   the service keeps runs (its retention, 7 days).
//! - Each row comes back exactly once: a run's rows are filled once, and a
//!   row computed twice (its worker died after storing the result) keeps
//!   the first result applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::{content_hash, Manifest};
use super::pool::PoolOptions;
use super::rows::RowBlock;
use super::run::{Metadata, RowOutput, RunOutput};
use super::service::{rows_per_job, InferService, RunOptions, ServiceOptions};
use super::{InferError, Model, RowError};
use crate::{Durability, JobQueue, Timestamp};

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
    /// `dataset_exclude` named `time`: refused when the call starts.
    pub(crate) time_excluded: bool,
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
    /// The pool's defaults ([`PoolOptions::new`]), queues in memory, the
    /// dataset `["*"]` (time, in, out and anomaly; metadata is opt-in, as
    /// in Wallaroo), no validations, no failure budget.
    pub fn new() -> Self {
        InferOptions {
            pool: PoolOptions::new(),
            dir: None,
            durability: Durability::Immediate,
            columns: vec![Column::Time, Column::Input, Column::Output, Column::Anomaly],
            validations: Vec::new(),
            failure_budget: None,
            time_excluded: false,
        }
    }

    /// Worker and batching options.
    #[must_use]
    pub fn pool(mut self, pool: PoolOptions) -> Self {
        self.pool = pool;
        self
    }

    /// Run on an [`InferService`](super::InferService) in `dir` (its
    /// `jobs` and `runs` queues) so that a caller that crashed, or calls
    /// again, collects what was already computed. Default = in memory.
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
        self.time_excluded = false;
        self
    }

    /// Return these columns too (`dataset_include(&[Column::Metadata])` is
    /// Wallaroo's `dataset=["*", "metadata"]`).
    #[must_use]
    pub fn dataset_include(mut self, columns: &[Column]) -> Self {
        for c in columns {
            if !self.columns.contains(c) {
                self.columns.push(*c);
            }
        }
        self
    }

    /// Return every column except these. Excluding [`Column::Time`] is an
    /// error ([`InferError::InvalidArgument`] when the call starts), as in
    /// Wallaroo.
    #[must_use]
    pub fn dataset_exclude(mut self, columns: &[Column]) -> Self {
        self.columns.retain(|c| !columns.contains(c));
        self.time_excluded |= columns.contains(&Column::Time);
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

/// One row of the result table; columns not asked for are `None`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InferRow<I, O> {
    /// When the row finished.
    pub time: Timestamp,
    /// The input row.
    pub input: Option<I>,
    /// The output, or why the row failed (past its retries, a permanent
    /// error, a missed deadline).
    pub output: Option<std::result::Result<O, RowError>>,
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
    /// Rows that failed for good.
    pub failed: usize,
    /// Rows whose results were already stored by an earlier call.
    pub resumed: usize,
    /// Wall time of the call.
    pub elapsed: Duration,
    /// The run's id in the directory.
    pub run: u64,
}

/// Run `model` over every row of `rows` on an
/// [`InferService`](super::InferService) opened for the call (in memory,
/// or in [`InferOptions::dir`]) and return the results in input order.
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
/// [`InferError::InvalidArgument`] for options out of range (and a
/// dataset without `time`); [`InferError::Codec`] for a row too large to
/// encode; [`InferError::FailureBudget`] when too many rows failed;
/// [`InferError::Stalled`] when the pool cannot go on (its queue failed);
/// [`InferError::Queue`] for queue errors
/// ([`Error::Io`](crate::Error::Io), [`Error::Locked`](crate::Error::Locked),
/// ...); [`InferError::Spawn`] and [`InferError::Panicked`] from the pool.
pub fn parallel_infer<M: Model>(
    model: Arc<M>,
    rows: &[M::Input],
    opts: &InferOptions<M::Output>,
) -> Result<InferResult<M::Input, M::Output>, InferError> {
    infer_rows(model, rows, opts, embedded(opts))
}

/// How `parallel_infer` opens its service: on the embedded queue, in
/// [`InferOptions::dir`] or in memory.
fn embedded<O>(
    opts: &InferOptions<O>,
) -> impl FnOnce(ServiceOptions) -> Result<InferService, InferError> + '_ {
    move |service_opts| match &opts.dir {
        Some(dir) => service_opts.open(dir),
        None => service_opts.open_in_memory(),
    }
}

/// [`parallel_infer`] on a service over two queues of any backend
/// ([`ServiceOptions::open_queues`]): `jobs` and `runs`, closed when the
/// call returns. Workers of other processes serving the same queues
/// share the run. [`InferOptions::dir`] and [`InferOptions::durability`]
/// do not apply (the queues are opened already).
///
/// # Errors
/// As [`parallel_infer`].
pub fn parallel_infer_on<M: Model, Q: JobQueue>(
    jobs: Q,
    runs: Q,
    model: Arc<M>,
    rows: &[M::Input],
    opts: &InferOptions<M::Output>,
) -> Result<InferResult<M::Input, M::Output>, InferError> {
    infer_rows(model, rows, opts, |service_opts| {
        service_opts.open_queues(jobs, runs)
    })
}

/// `parallel_infer` on the service `open` makes of the call's options.
fn infer_rows<M: Model, Q: JobQueue>(
    model: Arc<M>,
    rows: &[M::Input],
    opts: &InferOptions<M::Output>,
    open: impl FnOnce(ServiceOptions) -> Result<InferService<Q>, InferError>,
) -> Result<InferResult<M::Input, M::Output>, InferError> {
    let started = Instant::now();
    let block = RowBlock::encode(rows)?;
    let out = infer_block_on(model, block, opts, open)?;
    let rows_out = out
        .rows
        .into_iter()
        .zip(rows)
        .map(|(o, input)| make_row(o, Some(input), opts))
        .collect();
    Ok(InferResult {
        rows: rows_out,
        failed: out.failed,
        resumed: out.resumed,
        elapsed: started.elapsed(),
        run: out.run.0,
    })
}

/// `parallel_infer` of rows already in one block: the run's output, rows
/// in input order.
#[cfg(feature = "arrow")]
pub(crate) fn infer_block<M: Model>(
    model: Arc<M>,
    block: RowBlock,
    opts: &InferOptions<M::Output>,
) -> Result<RunOutput<M::Output>, InferError> {
    infer_block_on(model, block, opts, embedded(opts))
}

/// [`infer_block`] on the service `open` makes of the call's options: a
/// submit keyed by the rows' content, a wait, a close.
fn infer_block_on<M: Model, Q: JobQueue>(
    model: Arc<M>,
    block: RowBlock,
    opts: &InferOptions<M::Output>,
    open: impl FnOnce(ServiceOptions) -> Result<InferService<Q>, InferError>,
) -> Result<RunOutput<M::Output>, InferError> {
    opts.pool.validate()?;
    if opts.time_excluded {
        return Err(InferError::InvalidArgument(
            "the dataset cannot exclude `time`: every result row has it".into(),
        ));
    }
    let content = content_hash(model.version(), &block);
    let mut run_opts = RunOptions::new().key(format!("parallel_infer-{content:016x}"));
    if let Some(b) = opts.failure_budget {
        run_opts = run_opts.failure_budget(b);
    }
    run_opts.validate()?;
    let largest = block.largest_row();
    let chunk = rows_per_job(opts.pool.max_batch, largest);
    let total = block.byte_len() + block.len() * 8;
    let segment = segment_size_for(chunk * (largest + 8) + 256, total);
    let manifest = Manifest::size_with_names(
        block.len().div_ceil(chunk.max(1)),
        model.name().len() + model.version().len(),
    );
    let mut service_opts = ServiceOptions::new()
        .pool(opts.pool.clone())
        .durability(opts.durability)
        .segment_size(segment);
    service_opts.runs_segment_size = Some(runs_segment_size_for(manifest));
    // A table's run rarely fills one segment: making the next one ahead
    // would write its zeros for nothing.
    service_opts.prepare_ahead = false;
    let service = open(service_opts)?;
    let m = service.register(model);
    let waited = service
        .submit_block(&m, block, Some(content), &run_opts)
        .and_then(|run| run.wait_rows(opts.columns.contains(&Column::Metadata)));
    let closed = service.close();
    let out = waited?;
    closed?;
    Ok(out)
}

/// Segments of a run's queues: eight of the largest job at least, and room
/// for the whole table and its results (outputs up to a quarter of the
/// inputs' bytes) in one segment, so a call makes no second segment (each
/// costs a preallocation, a file sync and a directory sync on disk). A
/// larger segment costs little more to make: on disk only its first sync
/// takes longer (more extents to allocate), and in memory it is sparse.
fn segment_size_for(largest_job: usize, table_bytes: usize) -> u64 {
    let table = table_bytes as u64;
    let want = (largest_job as u64 + 64)
        .saturating_mul(8)
        .max(table.saturating_add(table / 4))
        .next_power_of_two();
    want.clamp(crate::config::MIN_SEGMENT_SIZE, 64 << 20)
}

/// The runs queue's segments for a call whose manifest takes up to
/// `manifest` bytes: room for two, at least the smallest segment (a call
/// stores one manifest; a larger segment would cost its zeros' writing
/// and syncing on the call's path for nothing).
fn runs_segment_size_for(manifest: usize) -> u64 {
    ((manifest as u64).saturating_add(64).saturating_mul(2))
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .clamp(crate::config::MIN_SEGMENT_SIZE, 64 << 20)
}

/// A result row as the dataset asks for it; `input` is the caller's row
/// (`None` where the caller keeps its inputs itself, as the Arrow path
/// does: then no `input` comes back).
pub(crate) fn make_row<I: Clone, O: Clone>(
    o: RowOutput<O>,
    input: Option<&I>,
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
        time: o.time,
        input: input.filter(|_| want(Column::Input)).cloned(),
        anomaly_count: want(Column::Anomaly).then_some(flagged.len() as u32),
        anomalies: want(Column::Anomaly).then_some(flagged),
        metadata: if want(Column::Metadata) {
            o.metadata
        } else {
            None
        },
        output: want(Column::Output).then_some(o.output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runs_queue_gets_the_smallest_segment_a_manifest_fits_twice_in() {
        let min = crate::config::MIN_SEGMENT_SIZE;
        // The bundled model's table: 57 jobs.
        assert_eq!(
            runs_segment_size_for(Manifest::size_with_names(57, 40)),
            min
        );
        // 100,000 jobs: about 2 MB of spans, twice that rounded up.
        let big = Manifest::size_with_names(100_000, 40);
        assert_eq!(runs_segment_size_for(big), 4 << 20);
        // What the segment can hold is above the manifest.
        let room = runs_segment_size_for(big) as usize - 32 - crate::codec::record::HEADER_SIZE;
        assert!(room > big);
        assert_eq!(runs_segment_size_for(usize::MAX / 2), 64 << 20);
    }
}
