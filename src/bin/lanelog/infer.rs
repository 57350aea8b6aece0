//! `lanelog infer`: run an ONNX model over every row of a CSV or Arrow IPC
//! file through an [`InferService`](lanelog::worker::InferService), and write the rows with their
//! predictions to a file of the same kind.
//!
//! The run goes to a service on `--dir` (or on a temporary directory,
//! removed at the end) with an idempotency key made of the model file's
//! hash, the input file's hash and the columns and output chosen, so the
//! same command run again after a kill finds the run and goes on from the
//! rows already stored.
//!
//! Invariants: everything that can be refused (the files, the columns, the
//! row width, the output path, a CSV output's column types) is checked
//! before the run is submitted; the output is written to a temporary file
//! beside `--output` and renamed onto it only once complete, so a failed
//! or killed command never leaves a partial output under that name.

use std::io::{self, Cursor, IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lanelog::worker::{
    FromArrow, InferError, InferService, Model, OnnxModel, PoolOptions, RowOutput, Run, RunOptions,
    RunOutput, ServiceOptions, ToArrow,
};
use lanelog::{Durability, JobQueue, Timestamp};

use crate::format::{duration, plural};
use crate::{fail, lib_error, Failure, Output, IO, LOCKED, NOT_A_QUEUE, OK, USAGE};

/// The model, the input or a column cannot be used.
pub(crate) const BAD_INPUT: i32 = 7;
/// The output was written, but some rows failed (their `out.error`).
pub(crate) const ROWS_FAILED: i32 = 8;

/// Longest `--deadline` (and any other duration option).
const MAX_DEADLINE: Duration = Duration::from_secs(365 * 86_400);

/// How often the progress bar is updated from the run.
const TICK: Duration = Duration::from_millis(200);

/// A table file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FileFormat {
    /// Comma-separated values with a header line
    Csv,
    /// Arrow IPC: a file (.arrow, .feather, .ipc) or a stream (.arrows)
    Arrow,
}

impl FileFormat {
    fn name(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Arrow => "arrow",
        }
    }

    /// The format a file name's extension says, if it says one.
    fn of_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(FileFormat::Csv),
            "arrow" | "arrows" | "feather" | "ipc" => Some(FileFormat::Arrow),
            _ => None,
        }
    }
}

/// `lanelog infer`'s options.
#[derive(Args, Debug)]
pub(crate) struct InferArgs {
    /// The ONNX model: one input of shape [N, features] (f32)
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
    /// The input table: CSV with a header line, or Arrow IPC
    #[arg(long, value_name = "IN")]
    input: PathBuf,
    /// Where to write the result table (refused if it exists, unless --force)
    #[arg(long, value_name = "OUT")]
    output: PathBuf,
    /// The input's format [default: from its extension: .csv, or .arrow/.arrows/.feather/.ipc]
    #[arg(long, value_name = "FORMAT")]
    format: Option<FileFormat>,
    /// The output's format [default: the input's]
    #[arg(long, value_name = "FORMAT")]
    format_out: Option<FileFormat>,
    /// Replace --output if it exists
    #[arg(long)]
    force: bool,
    /// Keep the run in this directory, so the same command run again after
    /// a kill or Ctrl-C goes on where it stopped [default: a temporary
    /// directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The feature columns, comma-separated, in the model's order [default:
    /// the one list column if there is exactly one, else every numeric
    /// column in order]
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    columns: Vec<String>,
    /// The model output to write [default: its only f32 output, or
    /// "probabilities"]
    #[arg(long, value_name = "NAME")]
    model_output: Option<String>,
    /// The run's priority lane (0-255): higher is served first
    #[arg(long, value_name = "N", default_value_t = 0)]
    priority: u8,
    /// Rows not started within this time from now fail as "deadline
    /// missed" (e.g. 30s, 5m, 2h, 1h30m, 500ms; units ms, s, m, h, d)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    deadline: Option<Duration>,
    /// Workers running the model at once [default: the number of CPUs];
    /// 0 with --nats: only submit and collect, `lanelog worker`s compute
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
    parallel: Option<u16>,
    /// Most rows per model call (and per job in the queue)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    batch: u32,
    #[command(flatten)]
    nats: crate::worker::NatsArgs,
}

/// A duration such as `30s`, `5m`, `1h30m` or `500ms`: one or more whole
/// numbers, each with a unit (ms, s, m, h, d), above zero and at most a
/// year.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration: use a number and a unit, such as 30s, 5m, 2h, 1h30m or \
             500ms (units: ms, s, m, h, d)"
        )
    };
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        let n: u64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let part = n
            .checked_mul(ms_per)
            .map(Duration::from_millis)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    if total.is_zero() {
        return Err(format!("{s:?}: a duration must be above zero"));
    }
    if total > MAX_DEADLINE {
        return Err(format!("{s:?}: a duration must be at most 365d"));
    }
    Ok(total)
}

/// What the model file says about itself.
struct ModelShape {
    /// Values per input row, when the file fixes it.
    width: Option<usize>,
    /// The output to write.
    output: String,
}

/// The rows to run: one feature vector per input row, and which columns
/// they came from.
struct Features {
    rows: Vec<Vec<f32>>,
    columns: Vec<String>,
}

/// Everything checked and ready to run.
struct Prepared {
    out_format: FileFormat,
    table: RecordBatch,
    features: Features,
    model: Arc<OnnxModel>,
    key: String,
}

pub(crate) fn infer(a: &InferArgs) -> Result<Output, Failure> {
    let started = Instant::now();
    // "From now" is from the command's start, not from the submission.
    let deadline = a.deadline.map(|d| Timestamp::now().plus(d));
    let p = prepare(a)?;
    let done = if p.features.rows.is_empty() {
        Done {
            rows: Vec::new(),
            resumed: 0,
            run: None,
        }
    } else {
        run_service(a, &p, deadline, started)?
    };
    let result = result_table(&p.table, p.model.output_name(), &done.rows)
        .map_err(|e| fail(IO, format!("cannot make the result table: {e}")))?;
    write_output(a, &result, p.out_format)?;
    Ok(summary(a, &p, &done, started.elapsed()))
}

/// Read and check the model and the input: everything that can be refused
/// is refused here, before anything is submitted.
fn prepare(a: &InferArgs) -> Result<Prepared, Failure> {
    #[cfg(not(feature = "nats"))]
    if a.nats.nats.is_some() {
        return Err(crate::worker::not_in_this_build());
    }
    let in_format = match a.format {
        Some(f) => f,
        None => FileFormat::of_path(&a.input).ok_or_else(|| {
            fail(
                USAGE,
                format!(
                    "{}: cannot tell its format from its name: pass --format csv or --format arrow",
                    a.input.display()
                ),
            )
        })?,
    };
    let out_format = a.format_out.unwrap_or(in_format);
    check_output(a, out_format)?;

    let model_bytes = read_file(&a.model)?;
    let shape = model_shape(&a.model, &model_bytes, a.model_output.as_deref())?;
    let input_bytes = read_file(&a.input)?;
    let table = read_table(&a.input, in_format, &input_bytes)?;
    let features = features(&table, &a.columns, shape.width, &a.input)?;
    let width = features.rows.first().map_or(shape.width, |r| Some(r.len()));
    let model = OnnxModel::load(&a.model, width.unwrap_or(1), &shape.output)
        .map_err(|e| fail(BAD_INPUT, e.message().to_string()))?;
    if a.parallel == Some(0) && a.nats.nats.is_none() {
        return Err(fail(
            USAGE,
            "--parallel 0 leaves the rows to workers of other processes, which only a run on \
             --nats has: pass --nats URL or at least one worker",
        ));
    }
    if a.nats.nats.is_some() && a.dir.is_some() {
        return Err(fail(
            USAGE,
            "--dir and --nats are two places for the run: pass one (a run on NATS is found \
             again by the same command with the same --nats and --prefix)",
        ));
    }
    // One row through the model: an output of another type, or a graph
    // tract cannot run, fails here once rather than on every row.
    if let Some(first) = features.rows.first() {
        model.infer(std::slice::from_ref(first)).map_err(|e| {
            fail(
                BAD_INPUT,
                format!(
                    "{}: the model fails on the first row: {}",
                    a.model.display(),
                    e.message()
                ),
            )
        })?;
    }
    if out_format == FileFormat::Csv {
        let empty = result_table(&table.slice(0, 0), model.output_name(), &[])
            .map_err(|e| fail(BAD_INPUT, format!("cannot make the result table: {e}")))?;
        write_table(io::sink(), &empty, FileFormat::Csv).map_err(|e| {
            fail(
                BAD_INPUT,
                format!("cannot write the result as CSV ({e}): pass --format-out arrow"),
            )
        })?;
    }
    let key = run_key(&model, &input_bytes, in_format, &features.columns);
    Ok(Prepared {
        out_format,
        table,
        features,
        model: Arc::new(model),
        key,
    })
}

/// What `infer` prints: the output, the model, the run and the time.
fn summary(a: &InferArgs, p: &Prepared, done: &Done, elapsed: Duration) -> Output {
    let failed = done.rows.iter().filter(|r| r.output.is_err()).count();
    let n = done.rows.len();
    let model = &*p.model;
    let mut text = format!(
        "{}: {n} row{} ({}), {failed} failed{}, {} from an earlier run\n",
        a.output.display(),
        plural(n as u64),
        p.out_format.name(),
        if failed > 0 { " (see out.error)" } else { "" },
        done.resumed,
    );
    text += &format!(
        "model {} ({}), output {}, {} value{} per row from {}\n",
        model.name(),
        model.version(),
        model.output_name(),
        model.features(),
        plural(model.features() as u64),
        column_list(&p.features.columns),
    );
    match (done.run, &a.dir) {
        (Some(run), Some(dir)) => {
            text += &format!("run {run} in {} (kept for resuming)\n", dir.display());
        }
        (Some(run), None) => text += &format!("run {run} in a temporary directory (removed)\n"),
        (None, _) => {}
    }
    let computed = n - done.resumed;
    let rate = computed as f64 / elapsed.as_secs_f64().max(1e-9);
    text += &match (computed, done.resumed) {
        (0, _) => format!("in {}, nothing left to compute\n", duration(elapsed)),
        (_, 0) => format!("in {}, {rate:.0} rows/s\n", duration(elapsed)),
        _ => format!(
            "in {}, {rate:.0} rows/s over the {computed} row{} not done before\n",
            duration(elapsed),
            plural(computed as u64)
        ),
    };
    Output {
        text,
        code: if failed > 0 { ROWS_FAILED } else { OK },
    }
}

/// `--output` is refused when it exists (without `--force`), is a
/// directory, is the input, its directory is missing, or its name says
/// the other format.
fn check_output(a: &InferArgs, out_format: FileFormat) -> Result<(), Failure> {
    let out = &a.output;
    let d = out.display();
    if out.is_dir() {
        return Err(fail(USAGE, format!("{d}: is a directory")));
    }
    if let (Ok(o), Ok(i)) = (out.canonicalize(), a.input.canonicalize()) {
        if o == i {
            return Err(fail(USAGE, format!("{d}: is the input file")));
        }
    }
    if out.exists() && !a.force {
        return Err(fail(
            USAGE,
            format!("{d}: exists: pass --force to replace it"),
        ));
    }
    let parent = parent_dir(out);
    if !parent.is_dir() {
        return Err(fail(
            IO,
            format!("{d}: its directory {} does not exist", parent.display()),
        ));
    }
    if a.format_out.is_none() {
        if let Some(named) = FileFormat::of_path(out).filter(|&f| f != out_format) {
            return Err(fail(
                USAGE,
                format!(
                    "{d}: its name says {} but the output would be {} (the input's format): \
                     pass --format-out {}",
                    named.name(),
                    out_format.name(),
                    named.name()
                ),
            ));
        }
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A whole file; a missing or unreadable one is an i/o failure naming it.
fn read_file(path: &Path) -> Result<Vec<u8>, Failure> {
    let d = path.display();
    if path.is_dir() {
        return Err(fail(IO, format!("{d}: is a directory, not a file")));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => fail(IO, format!("{d}: no such file")),
            _ => fail(IO, format!("{d}: cannot read it: {e}")),
        })?;
    Ok(bytes)
}

/// The model at `path` for rows of `width` values (given, or fixed by the
/// file) and its output `wanted` (or the one `model_shape` picks), as a
/// worker runs it.
#[cfg(feature = "nats")]
pub(crate) fn load_model(
    path: &Path,
    wanted: Option<&str>,
    width: Option<usize>,
) -> Result<OnnxModel, Failure> {
    let bytes = read_file(path)?;
    let shape = model_shape(path, &bytes, wanted)?;
    let d = path.display();
    let width = match (width, shape.width) {
        (Some(w), Some(fixed)) if w != fixed => {
            return Err(fail(
                USAGE,
                format!("{d}: the model takes rows of {fixed} values, not --width {w}"),
            ))
        }
        (Some(w), _) | (None, Some(w)) => w,
        (None, None) => {
            return Err(fail(
                USAGE,
                format!("{d}: the model does not fix how many values a row has: pass --width N"),
            ))
        }
    };
    OnnxModel::load(path, width, &shape.output)
        .map_err(|e| fail(BAD_INPUT, e.message().to_string()))
}

/// The model's input width (when the file fixes it) and the output to
/// write, read from the ONNX graph.
fn model_shape(path: &Path, bytes: &[u8], wanted: Option<&str>) -> Result<ModelShape, Failure> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_hir::infer::{Factoid as _, GenericFactoid};
    let d = path.display();
    let bad = |what: String| fail(BAD_INPUT, format!("{d}: {what}"));
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(|e| bad(format!("not a loadable ONNX model: {e}")))?;
    let inputs = model.input_outlets().map_or(0, <[OutletId]>::len);
    if inputs != 1 {
        return Err(bad(format!(
            "the model takes {inputs} inputs; lanelog infer runs models of one input"
        )));
    }
    let fact = model
        .input_fact(0)
        .map_err(|e| bad(format!("cannot read its input: {e}")))?;
    if let GenericFactoid::Only(rank) = fact.shape.rank() {
        if rank != 2 {
            return Err(bad(format!(
                "its input has rank {rank}; lanelog infer takes models of input [N, features]"
            )));
        }
    }
    let width = fact
        .shape
        .dim(1)
        .and_then(|dim| dim.concretize())
        .and_then(|dim| dim.as_i64())
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0);
    let outlets = model
        .output_outlets()
        .map_err(|e| bad(format!("cannot read its outputs: {e}")))?;
    let outputs: Vec<(String, Option<DatumType>)> = outlets
        .iter()
        .map(|&o| {
            let name = model
                .outlet_label(o)
                .map_or_else(|| model.node(o.node).name.clone(), str::to_string);
            let dt = model
                .outlet_fact(o)
                .ok()
                .and_then(|f| f.datum_type.concretize());
            (name, dt)
        })
        .collect();
    let listed = || {
        outputs
            .iter()
            .map(|(n, dt)| match dt {
                Some(dt) => format!("{n} ({dt:?})"),
                None => n.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let output = match wanted {
        Some(w) if outputs.iter().any(|(n, _)| n == w) => w.to_string(),
        Some(w) => {
            return Err(bad(format!(
                "no output named {w:?}; its outputs: {}",
                listed()
            )))
        }
        None => {
            let floats: Vec<&String> = outputs
                .iter()
                .filter(|(_, dt)| *dt == Some(DatumType::F32))
                .map(|(n, _)| n)
                .collect();
            match (floats.as_slice(), outputs.as_slice()) {
                ([one], _) => (*one).clone(),
                (_, [(only, _)]) => only.clone(),
                _ if outputs.iter().any(|(n, _)| n == "probabilities") => {
                    "probabilities".to_string()
                }
                _ => {
                    return Err(bad(format!(
                        "choose an output with --model-output; its outputs: {}",
                        listed()
                    )))
                }
            }
        }
    };
    Ok(ModelShape { width, output })
}

/// The whole input as one record batch.
fn read_table(path: &Path, format: FileFormat, bytes: &[u8]) -> Result<RecordBatch, Failure> {
    let d = path.display();
    let bad = |e: ArrowError| {
        let kind = match format {
            FileFormat::Csv => "a readable CSV file with a header line",
            FileFormat::Arrow => "a readable Arrow IPC file or stream",
        };
        fail(BAD_INPUT, format!("{d}: not {kind}: {e}"))
    };
    let (schema, batches): (SchemaRef, Vec<RecordBatch>) = match format {
        FileFormat::Csv => {
            let csv = arrow_csv::reader::Format::default().with_header(true);
            let (schema, _) = csv.infer_schema(Cursor::new(bytes), None).map_err(bad)?;
            if schema.fields().is_empty() {
                return Err(fail(BAD_INPUT, format!("{d}: has no columns")));
            }
            let schema = Arc::new(schema);
            let reader = arrow_csv::ReaderBuilder::new(schema.clone())
                .with_format(csv)
                .with_batch_size(64 << 10)
                .build(Cursor::new(bytes))
                .map_err(bad)?;
            let batches = reader.collect::<Result<Vec<_>, _>>().map_err(bad)?;
            (schema, batches)
        }
        FileFormat::Arrow if bytes.starts_with(b"ARROW1") => {
            let reader =
                arrow_ipc::reader::FileReader::try_new(Cursor::new(bytes), None).map_err(bad)?;
            let schema = reader.schema();
            (schema, reader.collect::<Result<Vec<_>, _>>().map_err(bad)?)
        }
        FileFormat::Arrow => {
            let reader =
                arrow_ipc::reader::StreamReader::try_new(Cursor::new(bytes), None).map_err(bad)?;
            let schema = reader.schema();
            (schema, reader.collect::<Result<Vec<_>, _>>().map_err(bad)?)
        }
    };
    arrow_select::concat::concat_batches(&schema, &batches).map_err(bad)
}

/// A type `FromArrow` reads as numbers.
fn is_number(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
    )
}

fn is_list(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
    )
}

fn column_list(names: &[String]) -> String {
    match names {
        [one] => format!("column {one:?}"),
        [first, .., last] if names.len() > 4 => {
            format!("{} columns ({first:?} .. {last:?})", names.len())
        }
        _ => format!(
            "columns {}",
            names
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The feature rows of `table`, from the columns named (or the default
/// ones), each as wide as the model takes.
fn features(
    table: &RecordBatch,
    named: &[String],
    width: Option<usize>,
    path: &Path,
) -> Result<Features, Failure> {
    let d = path.display();
    let schema = table.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let indices: Vec<usize> = if named.is_empty() {
        let lists: Vec<usize> = (0..names.len())
            .filter(|&i| is_list(schema.field(i).data_type()))
            .collect();
        let numbers: Vec<usize> = (0..names.len())
            .filter(|&i| is_number(schema.field(i).data_type()))
            .collect();
        match (lists.as_slice(), numbers.is_empty()) {
            ([one], _) => vec![*one],
            ([], false) => numbers,
            ([], true) => {
                return Err(fail(
                    BAD_INPUT,
                    format!(
                        "{d}: no numeric or list column to use as features (its columns: {}): \
                         name them with --columns",
                        names.join(", ")
                    ),
                ))
            }
            _ => {
                return Err(fail(
                    BAD_INPUT,
                    format!(
                        "{d}: several list columns ({}): name the feature column with --columns",
                        lists
                            .iter()
                            .map(|&i| names[i])
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    } else {
        named
            .iter()
            .map(|n| {
                names.iter().position(|c| c == n).ok_or_else(|| {
                    fail(
                        BAD_INPUT,
                        format!("{d}: no column {n:?} (its columns: {})", names.join(", ")),
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    let columns: Vec<String> = indices.iter().map(|&i| names[i].to_string()).collect();
    let projected = table
        .project(&indices)
        .map_err(|e| fail(BAD_INPUT, format!("{d}: {e}")))?;
    let rows = Vec::<f32>::rows_from(&projected).map_err(|e| match e {
        InferError::InvalidArgument(m) => fail(BAD_INPUT, format!("{d}: {m}")),
        e => fail(BAD_INPUT, format!("{d}: {e}")),
    })?;
    if let Some(width) = width {
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != width) {
            let what = if indices.len() == 1 && is_list(schema.field(indices[0]).data_type()) {
                format!("row {i} of column {:?} has {} values", columns[0], r.len())
            } else {
                format!(
                    "the {} give {} values per row",
                    column_list(&columns),
                    r.len()
                )
            };
            return Err(fail(
                BAD_INPUT,
                format!("{d}: {what}; the model takes {width} (choose the columns with --columns)"),
            ));
        }
    } else if let Some((i, r)) = rows
        .iter()
        .enumerate()
        .find(|(_, r)| r.len() != rows[0].len())
    {
        return Err(fail(
            BAD_INPUT,
            format!(
                "{d}: row {i} has {} values, row 0 has {}; the model takes one width",
                r.len(),
                rows[0].len()
            ),
        ));
    }
    Ok(Features { rows, columns })
}

/// The run's idempotency key: the same model file (name and bytes),
/// output, input file and feature columns give the same key (at most 128
/// bytes; `MAX_KEY_BYTES`).
fn run_key(model: &OnnxModel, input: &[u8], format: FileFormat, columns: &[String]) -> String {
    let mut what = Vec::new();
    for part in [model.name(), model.output_name(), format.name()]
        .into_iter()
        .chain(columns.iter().map(String::as_str))
    {
        what.extend_from_slice(part.as_bytes());
        what.push(0);
    }
    format!(
        "lanelog-infer/1/{}/{:016x}/{:016x}",
        model.version(),
        fnv64(input),
        fnv64(&what)
    )
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the run gave back.
struct Done {
    rows: Vec<RowOutput<Vec<f32>>>,
    resumed: usize,
    /// The run's id (none for an empty table, which needs no run).
    run: Option<u64>,
}

/// Submit the rows (or find the run of an earlier try), follow it with a
/// progress bar, and close the service.
fn run_service(
    a: &InferArgs,
    p: &Prepared,
    deadline: Option<Timestamp>,
    started: Instant,
) -> Result<Done, Failure> {
    if let Some(url) = &a.nats.nats {
        return run_on_nats(a, url, p, deadline, started);
    }
    let tmp;
    let (dir, durability) = match &a.dir {
        Some(dir) => {
            check_run_dir(dir)?;
            (dir.clone(), Durability::Immediate)
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("lanelog-infer-")
                .tempdir()
                .map_err(|e| fail(IO, format!("cannot make a temporary directory: {e}")))?;
            // Nothing in it outlives the command: no sync is worth its time.
            (tmp.path().join("run"), Durability::None)
        }
    };
    let service = ServiceOptions::new()
        .pool(pool(a))
        .durability(durability)
        .open(&dir)
        .map_err(|e| service_error(&dir, e))?;
    let place = dir.display().to_string();
    submit_and_follow(a, p, deadline, started, service, &place, |e| {
        service_error(&dir, e)
    })
}

/// The workers of this process: `--parallel`, `--batch`.
fn pool(a: &InferArgs) -> PoolOptions {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    PoolOptions::new()
        .num_parallel(a.parallel.map_or(threads, usize::from))
        .max_batch(a.batch as usize)
        .linger(Duration::from_millis(1))
}

/// The run on NATS JetStream (`--nats`): submitted, or found by its key
/// when an earlier try submitted it, and computed by this process's
/// workers and every `lanelog worker` on the same URL and prefix.
#[cfg(feature = "nats")]
fn run_on_nats(
    a: &InferArgs,
    url: &str,
    p: &Prepared,
    deadline: Option<Timestamp>,
    started: Instant,
) -> Result<Done, Failure> {
    let service = crate::worker::open_service(&a.nats, url, pool(a))?;
    let place = format!("{url} (prefix {})", a.nats.prefix);
    submit_and_follow(a, p, deadline, started, service, &place, |e| {
        fail(crate::worker::UNAVAILABLE, format!("{url}: {e}"))
    })
}

/// Refused before anything is read (see `prepare`).
#[cfg(not(feature = "nats"))]
fn run_on_nats(
    _: &InferArgs,
    _: &str,
    _: &Prepared,
    _: Option<Timestamp>,
    _: Instant,
) -> Result<Done, Failure> {
    Err(crate::worker::not_in_this_build())
}

/// Find the run by its key or submit it on `service` (at `place`, for
/// messages), follow it to its end with a progress bar, and close the
/// service.
#[allow(clippy::too_many_arguments)]
fn submit_and_follow<Q: JobQueue>(
    a: &InferArgs,
    p: &Prepared,
    deadline: Option<Timestamp>,
    started: Instant,
    service: InferService<Q>,
    place: &str,
    service_error: impl Fn(InferError) -> Failure,
) -> Result<Done, Failure> {
    let key = p.key.as_str();
    let m = service.register(p.model.clone());
    let found = service.find_run(&m, key).map_err(&service_error)?;
    let since = Instant::now();
    let (run, before) = match found {
        Some(run) => {
            let done = run.progress().done;
            eprintln!(
                "lanelog: note: resuming run {} in {place}: {done} of {} rows already done",
                run.id(),
                p.features.rows.len()
            );
            (run, done)
        }
        None => {
            // The service refuses a deadline already past, when it checks
            // it and again when it enqueues each part: say why here.
            let passed = || deadline.is_some_and(|at| at <= Timestamp::now());
            let too_late = || {
                fail(
                    USAGE,
                    format!(
                        "the --deadline passed before the run was submitted (reading, checking \
                         and submitting the input took {}): give a longer one",
                        duration(started.elapsed())
                    ),
                )
            };
            if passed() {
                return Err(too_late());
            }
            let mut opts = RunOptions::new().priority(a.priority).key(key);
            if let Some(at) = deadline {
                opts = opts.deadline(at);
            }
            let run = service.submit(&m, &p.features.rows, &opts).map_err(|e| {
                if passed() {
                    too_late()
                } else {
                    service_error(e)
                }
            })?;
            (run, 0)
        }
    };
    let out = follow(&run, before, since).map_err(&service_error)?;
    drop(run);
    service.close().map_err(&service_error)?;
    Ok(Done {
        rows: out.rows,
        resumed: out.resumed,
        run: Some(out.run.0),
    })
}

/// `--dir` must be new, empty, or a directory an inference service made.
fn check_run_dir(dir: &Path) -> Result<(), Failure> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(()); // Missing (made by open), or open says what is wrong.
    };
    if entries.next().is_none() || (dir.join("jobs").is_dir() && dir.join("runs").is_dir()) {
        return Ok(());
    }
    Err(fail(
        NOT_A_QUEUE,
        format!(
            "{}: not empty and not a directory of lanelog infer (no jobs/ and runs/ in it): \
             pass a new or empty directory",
            dir.display()
        ),
    ))
}

fn service_error(dir: &Path, e: InferError) -> Failure {
    match e {
        InferError::Queue(lanelog::Error::Locked) => fail(
            LOCKED,
            format!(
                "{}: open in another process (another lanelog infer on it?); wait for it or \
                 use another --dir",
                dir.display()
            ),
        ),
        InferError::Queue(e) => lib_error(dir, e),
        InferError::InvalidArgument(m) => fail(BAD_INPUT, m),
        e => fail(IO, format!("{}: {e}", dir.display())),
    }
}

/// Wait for the run, showing rows done, failed and the rate (of the rows
/// done since `since`, when `before` were done) on stderr when it is a
/// terminal.
fn follow<Q: JobQueue>(
    run: &Run<OnnxModel, Q>,
    before: usize,
    since: Instant,
) -> Result<RunOutput<Vec<f32>>, InferError> {
    let first = run.progress();
    let target = if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(first.total as u64), target);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos}/{len} rows, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let result = loop {
        let p = run.progress();
        let rate = p.done.saturating_sub(before) as f64 / since.elapsed().as_secs_f64();
        bar.set_position(p.done as u64);
        bar.set_message(format!("{} failed, {rate:.0} rows/s", p.failed));
        match run.wait_timeout(TICK) {
            Err(InferError::WaitTimedOut { .. }) => continue,
            other => break other,
        }
    };
    bar.finish_and_clear();
    result
}

/// The result table: `time`, `in.<name>` for every input column,
/// `out.<output>` (a list column) and `out.error`, as
/// `parallel_infer_arrow` makes it.
fn result_table(
    input: &RecordBatch,
    output: &str,
    rows: &[RowOutput<Vec<f32>>],
) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut push = |name: String, array: ArrayRef| {
        fields.push(Field::new(name, array.data_type().clone(), true));
        columns.push(array);
    };
    push(
        "time".into(),
        Arc::new(
            TimestampMillisecondArray::from(
                rows.iter().map(|r| r.time.0 as i64).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    );
    for (f, c) in input.schema().fields().iter().zip(input.columns()) {
        push(format!("in.{}", f.name()), c.clone());
    }
    let outputs: Vec<Option<&Vec<f32>>> = rows.iter().map(|r| r.output.as_ref().ok()).collect();
    push(format!("out.{output}"), Vec::<f32>::to_array(&outputs));
    push(
        "out.error".into(),
        Arc::new(
            rows.iter()
                .map(|r| r.output.as_ref().err().map(ToString::to_string))
                .collect::<StringArray>(),
        ),
    );
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// `table` as CSV can hold it: every list column split into one column
/// per element, `<name>.<i>` (null where a row's list is null or shorter),
/// and times in UTC given the offset `+00:00` (the CSV writer knows no
/// zone names).
fn csv_ready(table: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in table.schema().fields().iter().zip(table.columns()) {
        if let DataType::Timestamp(_, Some(tz)) = c.data_type() {
            if tz.eq_ignore_ascii_case("utc") || tz.as_ref() == "Z" {
                let c = utc_offset(c);
                fields.push(Field::new(f.name(), c.data_type().clone(), true));
                columns.push(c);
                continue;
            }
        }
        // Per row: where its list starts in the values, and its length.
        let (values, spans): (ArrayRef, Vec<Option<(usize, usize)>>) = match c.data_type() {
            DataType::FixedSizeList(_, k) => {
                let l = c.as_fixed_size_list();
                let spans = (0..l.len())
                    .map(|i| l.is_valid(i).then(|| (l.value_offset_at(i), *k as usize)))
                    .collect();
                (l.values().clone(), spans)
            }
            DataType::List(_) => {
                let l = c.as_list::<i32>();
                let spans = (0..l.len())
                    .map(|i| {
                        l.is_valid(i)
                            .then(|| (l.value_offsets()[i] as usize, l.value_length(i) as usize))
                    })
                    .collect();
                (l.values().clone(), spans)
            }
            DataType::LargeList(_) => {
                let l = c.as_list::<i64>();
                let spans = (0..l.len())
                    .map(|i| {
                        l.is_valid(i)
                            .then(|| (l.value_offsets()[i] as usize, l.value_length(i) as usize))
                    })
                    .collect();
                (l.values().clone(), spans)
            }
            _ => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
                continue;
            }
        };
        let width = spans.iter().flatten().map(|s| s.1).max().unwrap_or(0);
        for j in 0..width {
            let at: UInt64Array = spans
                .iter()
                .map(|s| s.filter(|&(_, n)| j < n).map(|(o, _)| (o + j) as u64))
                .collect();
            let element = arrow_select::take::take(values.as_ref(), &at, None)?;
            fields.push(Field::new(
                format!("{}.{j}", f.name()),
                element.data_type().clone(),
                true,
            ));
            columns.push(element);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// A timestamp column in UTC, with its zone written as `+00:00`.
fn utc_offset(c: &ArrayRef) -> ArrayRef {
    use arrow_array::types::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    use arrow_schema::TimeUnit;
    const UTC: &str = "+00:00";
    match c.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => Arc::new(
            c.as_primitive::<TimestampSecondType>()
                .clone()
                .with_timezone(UTC),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Arc::new(
            c.as_primitive::<TimestampMillisecondType>()
                .clone()
                .with_timezone(UTC),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Arc::new(
            c.as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone(UTC),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Arc::new(
            c.as_primitive::<TimestampNanosecondType>()
                .clone()
                .with_timezone(UTC),
        ),
        _ => c.clone(),
    }
}

fn write_table(
    sink: impl io::Write,
    table: &RecordBatch,
    format: FileFormat,
) -> Result<(), ArrowError> {
    match format {
        FileFormat::Csv => {
            let flat = csv_ready(table)?;
            let mut w = arrow_csv::WriterBuilder::new()
                .with_header(true)
                .build(sink);
            w.write(&flat)
        }
        FileFormat::Arrow => {
            let mut w = arrow_ipc::writer::FileWriter::try_new(sink, &table.schema())?;
            w.write(table)?;
            w.finish()
        }
    }
}

/// Write to a temporary file beside `--output`, then rename it there.
fn write_output(a: &InferArgs, table: &RecordBatch, format: FileFormat) -> Result<(), Failure> {
    let d = a.output.display();
    let parent = parent_dir(&a.output);
    let tmp = tempfile::Builder::new()
        .prefix(".lanelog-infer-")
        .suffix(".tmp")
        .tempfile_in(&parent)
        .map_err(|e| {
            fail(
                IO,
                format!("{}: cannot make a file there: {e}", parent.display()),
            )
        })?;
    let mut sink = io::BufWriter::new(tmp.as_file());
    write_table(&mut sink, table, format)
        .map_err(|e| fail(IO, format!("{d}: cannot write it: {e}")))?;
    io::Write::flush(&mut sink)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| fail(IO, format!("{d}: cannot write it: {e}")))?;
    drop(sink);
    let persisted = if a.force {
        tmp.persist(&a.output).map(drop)
    } else {
        tmp.persist_noclobber(&a.output).map(drop)
    };
    persisted.map_err(|e| match e.error.kind() {
        io::ErrorKind::AlreadyExists => fail(
            USAGE,
            format!("{d}: made by someone else meanwhile: pass --force to replace it"),
        ),
        _ => fail(IO, format!("{d}: cannot write it: {}", e.error)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        for bad in ["", "30", "s", "5 m", "1.5h", "-5s", "5x", "0s", "400d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(
            FileFormat::of_path(Path::new("a.CSV")),
            Some(FileFormat::Csv)
        );
        assert_eq!(
            FileFormat::of_path(Path::new("d/a.arrow")),
            Some(FileFormat::Arrow)
        );
        assert_eq!(FileFormat::of_path(Path::new("a.parquet")), None);
        assert_eq!(FileFormat::of_path(Path::new("a")), None);
    }
}
