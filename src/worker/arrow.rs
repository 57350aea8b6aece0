//! Arrow tables in and out of [`parallel_infer`](super::parallel_infer) (the `arrow` feature,
//! built on `arrow-array` and `arrow-schema` only).
//!
//! [`parallel_infer_arrow`] takes a [`RecordBatch`], turns each of its rows
//! into the model's input ([`FromArrow`]), runs them through
//! [`parallel_infer`](super::parallel_infer) and gives back a result [`RecordBatch`] in input
//! order, with the columns Wallaroo's `parallel_infer` returns:
//!
//! | column | type | with |
//! |---|---|---|
//! | `time` | `Timestamp(ms, "UTC")` | always |
//! | `in.<name>` | the input column, unchanged | [`Column::Input`] |
//! | `out.<name>`, one per name of [`Model::output_names`] | from [`ToArrow`], null for a failed row | [`Column::Output`] |
//! | `out.error` | `Utf8`, the error of a failed row, else null | [`Column::Output`] |
//! | `anomaly.count` | `UInt32` | [`Column::Anomaly`] |
//! | `anomaly.<validation>` | `Boolean`, one per validation | [`Column::Anomaly`] |
//! | `metadata.last_model.model_name`, `metadata.last_model.model_sha` (null without a file), `metadata.model_version`, `metadata.pipeline_version`, `metadata.partition` | `Utf8` | [`Column::Metadata`] |
//! | `metadata.attempt`, `metadata.batch_rows` | `UInt32` | [`Column::Metadata`] |
//! | `metadata.elapsed.decode`, `.queue_wait`, `.inference`, `.store` | `Duration(ns)` | [`Column::Metadata`] |
//!
//! `<output>` is [`Model::output_name`]. Queue payloads stay bincode'd rows
//! (an Arrow IPC message per row would be ~3x larger and slower); the
//! result table is rebuilt with builders at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Float64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, DurationNanosecondArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow_schema::{Field, Schema};

use super::infer::{infer_block, make_row};
use super::rows::RowBlock;
use super::{Column, InferError, InferOptions, InferRow, Model};

type Result<T, E = InferError> = std::result::Result<T, E>;

/// A model input that can be read from every row of a [`RecordBatch`].
pub trait FromArrow: Sized {
    /// One value per row of `batch`, in order.
    ///
    /// # Errors
    /// [`InferError::InvalidArgument`] naming the column (and row) that cannot
    /// be read: a wrong type, a null.
    fn rows_from(batch: &RecordBatch) -> Result<Vec<Self>>;
}

/// A model output that can be written as Arrow columns: one, or one per
/// output of a model of several ([`Model::output_names`]).
pub trait ToArrow: Sized {
    /// One array holding `values` in order; `None` (a failed row) is null.
    fn to_array(values: &[Option<&Self>]) -> ArrayRef;

    /// One array per output, `outputs` of them, each holding that output
    /// of `values` in order. Default: the one array of
    /// [`ToArrow::to_array`] (a value of one output).
    fn to_arrays(values: &[Option<&Self>], outputs: usize) -> Vec<ArrayRef> {
        let _ = outputs;
        vec![Self::to_array(values)]
    }
}

/// Feature vectors: either the batch has **one list column** (`List`,
/// `LargeList` or `FixedSizeList` of numbers), each row its list, or
/// **every column is a number** (any integer or float width, or boolean as
/// 0/1), each row its values in column order. Nulls are refused.
impl FromArrow for Vec<f32> {
    fn rows_from(batch: &RecordBatch) -> Result<Vec<Self>> {
        Ok(feature_rows(batch)?
            .into_iter()
            .map(|r| r.into_iter().map(|v| v as f32).collect())
            .collect())
    }
}

/// As for `Vec<f32>`.
impl FromArrow for Vec<f64> {
    fn rows_from(batch: &RecordBatch) -> Result<Vec<Self>> {
        feature_rows(batch)
    }
}

fn feature_rows(batch: &RecordBatch) -> Result<Vec<Vec<f64>>> {
    let schema = batch.schema();
    let bad = |msg: String| InferError::InvalidArgument(msg);
    if batch.num_columns() == 0 {
        return Err(bad("the record batch has no columns".into()));
    }
    if batch.num_columns() == 1 {
        let name = schema.field(0).name();
        let col = batch.column(0);
        let list_row = |i: usize, values: ArrayRef| -> Result<Vec<f64>> {
            if col.is_null(i) {
                return Err(bad(format!("column '{name}': row {i} is null")));
            }
            numbers(values.as_ref(), &format!("column '{name}' row {i}"))
        };
        if let Some(l) = col.as_fixed_size_list_opt() {
            return (0..l.len()).map(|i| list_row(i, l.value(i))).collect();
        }
        if let Some(l) = col.as_list_opt::<i32>() {
            return (0..l.len()).map(|i| list_row(i, l.value(i))).collect();
        }
        if let Some(l) = col.as_list_opt::<i64>() {
            return (0..l.len()).map(|i| list_row(i, l.value(i))).collect();
        }
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| numbers(c.as_ref(), &format!("column '{}'", f.name())))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..batch.num_rows())
        .map(|i| columns.iter().map(|c| c[i]).collect())
        .collect())
}

/// Every value of a numeric array as f64; a null or a non-numeric type is
/// an error naming `what`.
fn numbers(array: &dyn Array, what: &str) -> Result<Vec<f64>> {
    if array.null_count() > 0 {
        let row = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
        return Err(InferError::InvalidArgument(format!(
            "{what}: value {row} is null (fill or drop nulls before inference)"
        )));
    }
    macro_rules! try_type {
        ($($t:ty),*) => {$(
            if let Some(a) = array.as_primitive_opt::<$t>() {
                return Ok(a.values().iter().map(|&v| v as f64).collect());
            }
        )*};
    }
    try_type!(
        Float64Type,
        Float32Type,
        Int8Type,
        Int16Type,
        Int32Type,
        Int64Type,
        UInt8Type,
        UInt16Type,
        UInt32Type,
        UInt64Type
    );
    if let Some(a) = array.as_boolean_opt() {
        return Ok(a.values().iter().map(|b| f64::from(u8::from(b))).collect());
    }
    Err(InferError::InvalidArgument(format!(
        "{what}: type {} is not a number, a boolean or a list of numbers",
        array.data_type()
    )))
}

macro_rules! to_arrow_primitive {
    ($($t:ty => $array:ty),*) => {$(
        impl ToArrow for $t {
            fn to_array(values: &[Option<&Self>]) -> ArrayRef {
                Arc::new(values.iter().map(|v| v.copied()).collect::<$array>())
            }
        }
    )*};
}
to_arrow_primitive!(f32 => Float32Array, f64 => Float64Array, i64 => Int64Array, u32 => UInt32Array, bool => BooleanArray);

impl ToArrow for String {
    fn to_array(values: &[Option<&Self>]) -> ArrayRef {
        Arc::new(
            values
                .iter()
                .map(|v| v.map(String::as_str))
                .collect::<StringArray>(),
        )
    }
}

macro_rules! to_arrow_vec {
    ($($t:ty => $builder:ty),*) => {$(
        /// `FixedSizeList` when every present value has the same length
        /// (class probabilities, embeddings), otherwise `List`.
        impl ToArrow for Vec<$t> {
            fn to_array(values: &[Option<&Self>]) -> ArrayRef {
                let mut lens = values.iter().flatten().map(|v| v.len());
                let first = lens.next();
                match first.filter(|&k| lens.all(|l| l == k)).and_then(|k| i32::try_from(k).ok()) {
                    Some(k) => {
                        let mut b = FixedSizeListBuilder::new(<$builder>::new(), k);
                        for v in values {
                            match v {
                                Some(v) => {
                                    b.values().append_slice(v);
                                    b.append(true);
                                }
                                None => {
                                    b.values().append_nulls(k as usize);
                                    b.append(false);
                                }
                            }
                        }
                        Arc::new(b.finish())
                    }
                    None => {
                        let mut b = ListBuilder::new(<$builder>::new());
                        for v in values {
                            if let Some(v) = v {
                                b.values().append_slice(v);
                            }
                            b.append(v.is_some());
                        }
                        Arc::new(b.finish())
                    }
                }
            }
        }
    )*};
}
to_arrow_vec!(f32 => Float32Builder, f64 => Float64Builder);

/// The outputs of a model of several (one vector per output, as
/// [`OnnxOutputs`](super::OnnxOutputs) gives them): as one column, a list
/// of the outputs' lists; as columns, one per output.
impl ToArrow for Vec<Vec<f32>> {
    fn to_array(values: &[Option<&Self>]) -> ArrayRef {
        let mut b = ListBuilder::new(ListBuilder::new(Float32Builder::new()));
        for v in values {
            if let Some(outputs) = v {
                for o in outputs.iter() {
                    b.values().values().append_slice(o);
                    b.values().append(true);
                }
            }
            b.append(v.is_some());
        }
        Arc::new(b.finish())
    }

    fn to_arrays(values: &[Option<&Self>], outputs: usize) -> Vec<ArrayRef> {
        (0..outputs)
            .map(|k| {
                let column: Vec<Option<&Vec<f32>>> =
                    values.iter().map(|v| v.and_then(|o| o.get(k))).collect();
                Vec::<f32>::to_array(&column)
            })
            .collect()
    }
}

/// The result table of [`parallel_infer_arrow`] and the run's totals.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InferTable {
    /// One row per input row, in input order (columns: the module docs).
    pub table: RecordBatch,
    /// Rows that failed past their retries.
    pub failed: usize,
    /// Rows whose results were already stored by an earlier call.
    pub resumed: usize,
    /// Wall time of the call.
    pub elapsed: Duration,
    /// The run's id.
    pub run: u64,
}

/// [`parallel_infer`](super::parallel_infer) over the rows of an Arrow [`RecordBatch`]; the
/// result is a [`RecordBatch`] in input order (columns: the module docs).
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Float64Array, Int32Array, RecordBatch, cast::AsArray, types::Float32Type};
/// use lanelog::worker::{parallel_infer_arrow, InferOptions, Model, ModelError};
///
/// struct Sum;
/// impl Model for Sum {
///     type Input = Vec<f32>;
///     type Output = f32;
///     fn name(&self) -> &str { "sum" }
///     fn version(&self) -> &str { "1" }
///     fn output_name(&self) -> &str { "total" }
///     fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<f32>, ModelError> {
///         Ok(rows.iter().map(|r| r.iter().sum()).collect())
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let batch = RecordBatch::try_from_iter([
///     ("a", Arc::new(Int32Array::from(vec![1, 2, 3])) as _),
///     ("b", Arc::new(Float64Array::from(vec![0.5, 0.5, 0.5])) as _),
/// ])?;
/// let out = parallel_infer_arrow(Arc::new(Sum), &batch, &InferOptions::new())?;
/// let total = out.table.column_by_name("out.total").unwrap().as_primitive::<Float32Type>();
/// assert_eq!(total.values().to_vec(), vec![1.5, 2.5, 3.5]);
/// assert!(out.table.column_by_name("in.a").is_some());
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`InferError::InvalidArgument`] for a batch the input type cannot read
/// (naming the column), then everything [`parallel_infer`](super::parallel_infer) returns.
pub fn parallel_infer_arrow<M: Model>(
    model: Arc<M>,
    batch: &RecordBatch,
    opts: &InferOptions<M::Output>,
) -> Result<InferTable>
where
    M::Input: FromArrow,
    M::Output: ToArrow,
{
    let started = Instant::now();
    let outputs = model.output_names();
    let batches = std::slice::from_ref(batch);
    let out = run_batches(model, batches, opts)?;
    Ok(InferTable {
        table: result_table(batch, &out.rows, opts, &outputs)?,
        failed: out.failed,
        resumed: out.resumed,
        elapsed: started.elapsed(),
        run: out.run.0,
    })
}

/// The batches' rows run as one table: the result rows (without inputs:
/// those come back from the batches themselves) and the run's totals.
fn run_batches<M: Model>(
    model: Arc<M>,
    batches: &[RecordBatch],
    opts: &InferOptions<M::Output>,
) -> Result<Ran<M::Input, M::Output>>
where
    M::Input: FromArrow,
{
    let block = match tensor_block::<M::Input>(batches) {
        Some(block) => block,
        None => {
            let mut rows = Vec::new();
            for b in batches {
                rows.extend(M::Input::rows_from(b)?);
            }
            RowBlock::encode(&rows)?
        }
    };
    let inner = opts.clone().dataset_exclude(&[Column::Input]);
    let out = infer_block(model, block, &inner)?;
    Ok(Ran {
        rows: out
            .rows
            .into_iter()
            .map(|o| make_row(o, None, &inner))
            .collect(),
        failed: out.failed,
        resumed: out.resumed,
        run: out.run,
    })
}

/// A run's result rows and totals, for the result tables.
struct Ran<I, O> {
    rows: Vec<InferRow<I, O>>,
    failed: usize,
    resumed: usize,
    run: super::RunId,
}

/// The batches' rows as one tensor block straight from their values, with
/// no vector per row: when the model takes `Vec<f32>` rows and every batch
/// is one `FixedSizeList<Float32>` column without nulls (the layout a
/// tensor column has). `None` otherwise: the rows are then read by
/// [`FromArrow`], with the same values.
fn tensor_block<I: 'static>(batches: &[RecordBatch]) -> Option<RowBlock> {
    if std::any::TypeId::of::<I>() != std::any::TypeId::of::<Vec<f32>>() {
        return None;
    }
    let mut width = None;
    let mut values: Vec<f32> = Vec::new();
    let mut rows = 0;
    for b in batches {
        if b.num_columns() != 1 {
            return None;
        }
        let list = b.column(0).as_fixed_size_list_opt()?;
        let floats = list.values().as_primitive_opt::<Float32Type>()?;
        if list.null_count() > 0 || floats.null_count() > 0 {
            return None;
        }
        let w = usize::try_from(list.value_length()).ok()?;
        if *width.get_or_insert(w) != w {
            return None;
        }
        if list.is_empty() {
            continue;
        }
        let start = list.value_offset_at(0);
        values.extend_from_slice(floats.values().get(start..start + list.len() * w)?);
        rows += list.len();
    }
    RowBlock::from_elements(rows, width.unwrap_or(0), &values)
}

/// The result tables of [`parallel_infer_arrow_batches`] and the run's
/// totals.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InferTables {
    /// One result batch per input batch, each with its input batch's rows
    /// in order (columns: the module docs).
    pub tables: Vec<RecordBatch>,
    /// Rows that failed past their retries.
    pub failed: usize,
    /// Rows whose results were already stored by an earlier call.
    pub resumed: usize,
    /// Wall time of the call.
    pub elapsed: Duration,
    /// The run's id.
    pub run: u64,
}

/// [`parallel_infer_arrow`] over a table of several record batches (as an
/// Arrow IPC file or stream holds it): one run over all their rows, and one
/// result batch per input batch, as Wallaroo returns a table of the type it
/// was given.
///
/// # Errors
/// [`InferError::InvalidArgument`] for batches of different schemas or a
/// batch the input type cannot read (naming the column), then everything
/// [`parallel_infer`](super::parallel_infer) returns.
pub fn parallel_infer_arrow_batches<M: Model>(
    model: Arc<M>,
    batches: &[RecordBatch],
    opts: &InferOptions<M::Output>,
) -> Result<InferTables>
where
    M::Input: FromArrow,
    M::Output: ToArrow,
{
    if let Some(first) = batches.first() {
        if let Some(i) = batches.iter().position(|b| b.schema() != first.schema()) {
            return Err(InferError::InvalidArgument(format!(
                "record batch {i} has another schema than batch 0"
            )));
        }
    }
    let started = Instant::now();
    let outputs = model.output_names();
    let out = run_batches(model, batches, opts)?;
    let mut tables = Vec::with_capacity(batches.len());
    let mut at = 0;
    for b in batches {
        let part = &out.rows[at..at + b.num_rows()];
        tables.push(result_table(b, part, opts, &outputs)?);
        at += b.num_rows();
    }
    Ok(InferTables {
        tables,
        failed: out.failed,
        resumed: out.resumed,
        elapsed: started.elapsed(),
        run: out.run.0,
    })
}

/// The result batch for `batch`, whose rows came back as `rows` from a
/// model with these outputs.
fn result_table<I, O: ToArrow>(
    batch: &RecordBatch,
    rows: &[InferRow<I, O>],
    opts: &InferOptions<O>,
    outputs: &[String],
) -> Result<RecordBatch> {
    let want = |c: Column| opts.columns.contains(&c);
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    let mut push = |name: &str, array: ArrayRef| {
        fields.push(Field::new(name, array.data_type().clone(), true));
        columns.push(array);
    };
    push(
        "time",
        Arc::new(
            TimestampMillisecondArray::from(
                rows.iter().map(|r| r.time.0 as i64).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    );
    if want(Column::Input) {
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            push(&format!("in.{}", f.name()), c.clone());
        }
    }
    if want(Column::Output) {
        let values: Vec<Option<&O>> = rows
            .iter()
            .map(|r| r.output.as_ref().and_then(|o| o.as_ref().ok()))
            .collect();
        let columns = match outputs {
            [_] => vec![O::to_array(&values)],
            _ => O::to_arrays(&values, outputs.len()),
        };
        if columns.len() != outputs.len() {
            return Err(InferError::InvalidArgument(format!(
                "the model names {} outputs but its output type gives {} columns",
                outputs.len(),
                columns.len()
            )));
        }
        for (name, column) in outputs.iter().zip(columns) {
            push(&format!("out.{name}"), column);
        }
        push(
            "out.error",
            strings(rows, |r| {
                r.output
                    .as_ref()
                    .and_then(|o| o.as_ref().err())
                    .map(ToString::to_string)
            }),
        );
    }
    if want(Column::Anomaly) {
        push(
            "anomaly.count",
            Arc::new(
                rows.iter()
                    .map(|r| r.anomaly_count)
                    .collect::<UInt32Array>(),
            ),
        );
        for (name, _) in &opts.validations {
            let flagged = rows
                .iter()
                .map(|r| r.anomalies.as_ref().map(|a| a.contains(name)))
                .collect::<BooleanArray>();
            push(&format!("anomaly.{name}"), Arc::new(flagged));
        }
    }
    if want(Column::Metadata) {
        let meta = |f: fn(&super::Metadata) -> u64| {
            rows.iter()
                .map(|r| r.metadata.as_ref().map(f))
                .collect::<Vec<_>>()
        };
        let text = |f: fn(&super::Metadata) -> Option<String>| {
            strings(rows, |r| r.metadata.as_ref().and_then(f))
        };
        push(
            "metadata.last_model.model_name",
            text(|m| Some(m.model_name.to_string())),
        );
        push(
            "metadata.last_model.model_sha",
            text(|m| m.model_sha.as_deref().map(str::to_string)),
        );
        push(
            "metadata.model_version",
            text(|m| Some(m.model_version.to_string())),
        );
        push(
            "metadata.pipeline_version",
            text(|m| Some(m.pipeline_version.to_string())),
        );
        push(
            "metadata.partition",
            text(|m| Some(m.partition.to_string())),
        );
        let u32s = |v: Vec<Option<u64>>| -> ArrayRef {
            Arc::new(
                v.into_iter()
                    .map(|x| x.map(|x| x as u32))
                    .collect::<UInt32Array>(),
            )
        };
        let nanos = |v: Vec<Option<u64>>| -> ArrayRef {
            Arc::new(
                v.into_iter()
                    .map(|x| x.map(|x| x as i64))
                    .collect::<DurationNanosecondArray>(),
            )
        };
        push("metadata.attempt", u32s(meta(|m| u64::from(m.attempt))));
        push(
            "metadata.elapsed.decode",
            nanos(meta(|m| m.elapsed.decode.as_nanos() as u64)),
        );
        push(
            "metadata.elapsed.queue_wait",
            nanos(meta(|m| m.elapsed.queue_wait.as_nanos() as u64)),
        );
        push(
            "metadata.elapsed.inference",
            nanos(meta(|m| m.elapsed.inference.as_nanos() as u64)),
        );
        push(
            "metadata.elapsed.store",
            nanos(meta(|m| m.elapsed.store.as_nanos() as u64)),
        );
        push(
            "metadata.batch_rows",
            u32s(meta(|m| u64::from(m.batch_rows))),
        );
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| InferError::InvalidArgument(format!("cannot build the result table: {e}")))
}

fn strings<I, O>(
    rows: &[InferRow<I, O>],
    get: impl Fn(&InferRow<I, O>) -> Option<String>,
) -> ArrayRef {
    Arc::new(rows.iter().map(get).collect::<StringArray>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Int32Builder, ListBuilder as LB};
    use arrow_array::Int32Array;
    use arrow_schema::DataType;

    #[test]
    fn numeric_columns_become_feature_rows() {
        let batch = RecordBatch::try_from_iter([
            ("a", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            (
                "b",
                Arc::new(Float64Array::from(vec![0.5, 1.5])) as ArrayRef,
            ),
            (
                "c",
                Arc::new(BooleanArray::from(vec![true, false])) as ArrayRef,
            ),
        ])
        .unwrap();
        let rows = Vec::<f32>::rows_from(&batch).unwrap();
        assert_eq!(rows, vec![vec![1.0, 0.5, 1.0], vec![2.0, 1.5, 0.0]]);
    }

    #[test]
    fn one_list_column_gives_its_lists() {
        let mut b = LB::new(Int32Builder::new());
        b.values().append_slice(&[1, 2, 3]);
        b.append(true);
        b.values().append_slice(&[4]);
        b.append(true);
        let batch = RecordBatch::try_from_iter([("x", Arc::new(b.finish()) as ArrayRef)]).unwrap();
        let rows = Vec::<f64>::rows_from(&batch).unwrap();
        assert_eq!(rows, vec![vec![1.0, 2.0, 3.0], vec![4.0]]);
    }

    #[test]
    fn nulls_and_strings_are_refused_by_name() {
        let batch = RecordBatch::try_from_iter([(
            "age",
            Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
        )])
        .unwrap();
        let e = Vec::<f32>::rows_from(&batch).unwrap_err().to_string();
        assert!(e.contains("'age'") && e.contains("value 1 is null"), "{e}");

        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
        ])
        .unwrap();
        let e = Vec::<f32>::rows_from(&batch).unwrap_err().to_string();
        assert!(e.contains("'name'") && e.contains("Utf8"), "{e}");

        let mut b = LB::new(Int32Builder::new());
        b.values().append_slice(&[1]);
        b.append(true);
        b.append(false);
        let batch = RecordBatch::try_from_iter([("v", Arc::new(b.finish()) as ArrayRef)]).unwrap();
        let e = Vec::<f32>::rows_from(&batch).unwrap_err().to_string();
        assert!(e.contains("'v'") && e.contains("row 1 is null"), "{e}");
    }

    #[test]
    fn vectors_of_one_length_are_fixed_size_lists() {
        let a = vec![1.0f32, 2.0];
        let b = vec![3.0f32, 4.0];
        let arr = Vec::<f32>::to_array(&[Some(&a), None, Some(&b)]);
        assert_eq!(
            arr.data_type(),
            &DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), 2)
        );
        assert!(arr.is_null(1) && !arr.is_null(2));
        let c = vec![5.0f32];
        let arr = Vec::<f32>::to_array(&[Some(&a), Some(&c)]);
        assert!(matches!(arr.data_type(), DataType::List(_)));
        assert_eq!(arr.as_list::<i32>().value(1).len(), 1);
    }
}
