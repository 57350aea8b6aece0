//! Goal: `parallel_infer_arrow` takes an Arrow table in and gives a result
//! table back in input order, with Wallaroo's columns, failed rows as nulls
//! plus their errors, the columns asked for, and resumable durable runs.
//! Method: a test model with chosen failures, and the bundled ONNX model
//! against its fixture, fed as a `FixedSizeList<f32, 64>` tensor column.
#![cfg(feature = "arrow")]

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    DurationNanosecondType, Float64Type, TimestampMillisecondType, UInt32Type,
};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use lanelog::worker::{parallel_infer_arrow, Column, InferOptions, Model, ModelError, PoolOptions};

/// Sums a row; fails on rows whose first value is negative.
struct Sum;

impl Model for Sum {
    type Input = Vec<f64>;
    type Output = f64;
    fn name(&self) -> &str {
        "sum"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn output_name(&self) -> &str {
        "total"
    }
    fn infer(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ModelError> {
        match rows.iter().position(|r| r[0] < 0.0) {
            Some(i) => Err(ModelError::permanent(format!(
                "negative first value in row {i}"
            ))),
            None => Ok(rows.iter().map(|r| r.iter().sum()).collect()),
        }
    }
}

fn table(n: usize) -> RecordBatch {
    let a: Vec<i64> = (0..n as i64)
        .map(|i| if i % 97 == 13 { -1 } else { i })
        .collect();
    let b: Vec<f64> = (0..n).map(|i| i as f64 / 2.0).collect();
    RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(a)) as ArrayRef),
        ("b", Arc::new(Float64Array::from(b)) as ArrayRef),
    ])
    .unwrap()
}

fn opts() -> InferOptions<f64> {
    InferOptions::new()
        .pool(PoolOptions::new().num_parallel(3).max_batch(16).retries(0))
        .validation("big", |x: &f64| *x > 500.0)
        .dataset_include(&[Column::Metadata])
}

#[test]
fn results_come_back_in_input_order_with_every_column() {
    let n = 400;
    let input = table(n);
    let out = parallel_infer_arrow(Arc::new(Sum), &input, &opts()).unwrap();
    let t = &out.table;
    assert_eq!(t.num_rows(), n);
    let names: Vec<String> = t
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "time",
            "in.a",
            "in.b",
            "out.total",
            "out.error",
            "anomaly.count",
            "anomaly.big",
            "metadata.last_model.model_name",
            "metadata.last_model.model_sha",
            "metadata.model_version",
            "metadata.pipeline_version",
            "metadata.partition",
            "metadata.attempt",
            "metadata.elapsed.decode",
            "metadata.elapsed.queue_wait",
            "metadata.elapsed.inference",
            "metadata.elapsed.store",
            "metadata.batch_rows",
        ]
    );
    // The input columns are the caller's, unchanged.
    assert_eq!(t.column_by_name("in.a").unwrap(), input.column(0));
    let total = t
        .column_by_name("out.total")
        .unwrap()
        .as_primitive::<Float64Type>();
    let error = t.column_by_name("out.error").unwrap().as_string::<i32>();
    let count = t
        .column_by_name("anomaly.count")
        .unwrap()
        .as_primitive::<UInt32Type>();
    let big = t.column_by_name("anomaly.big").unwrap().as_boolean();
    let a = input
        .column(0)
        .as_primitive::<arrow_array::types::Int64Type>();
    let mut failed = 0;
    for i in 0..n {
        if a.value(i) < 0 {
            failed += 1;
            assert!(total.is_null(i), "row {i}");
            assert!(error.value(i).contains("negative first value"), "row {i}");
            assert_eq!(count.value(i), 0);
        } else {
            let want = a.value(i) as f64 + i as f64 / 2.0;
            assert_eq!(total.value(i), want, "row {i}");
            assert!(error.is_null(i));
            assert_eq!(big.value(i), want > 500.0);
            assert_eq!(count.value(i), u32::from(want > 500.0));
        }
    }
    assert_eq!(out.failed, failed);
    assert!(failed >= 4);
    let time = t
        .column_by_name("time")
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(time.null_count(), 0);
    assert!(time.values().iter().all(|&ms| ms > 1_700_000_000_000));
    let model = t.column_by_name("metadata.last_model.model_name").unwrap();
    assert_eq!(model.as_string::<i32>().value(0), "sum");
    let attempt = t
        .column_by_name("metadata.attempt")
        .unwrap()
        .as_primitive::<UInt32Type>();
    assert!(attempt.values().iter().all(|&a| a >= 1));
    let infer = t.column_by_name("metadata.elapsed.inference").unwrap();
    assert_eq!(
        infer.as_primitive::<DurationNanosecondType>().null_count(),
        0
    );
    // A model without a file has no SHA; every row has its partition.
    let sha = t.column_by_name("metadata.last_model.model_sha").unwrap();
    assert_eq!(sha.null_count(), n);
    let partition = t.column_by_name("metadata.partition").unwrap();
    assert!(partition.as_string::<i32>().value(0).starts_with("worker-"));
}

#[test]
fn dataset_picks_columns_and_time_is_always_there() {
    let input = table(50);
    let o = opts().dataset(&[Column::Output]);
    let out = parallel_infer_arrow(Arc::new(Sum), &input, &o).unwrap();
    let names: Vec<String> = out
        .table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["time", "out.total", "out.error"]);

    let o = opts().dataset_exclude(&[Column::Metadata, Column::Output]);
    let out = parallel_infer_arrow(Arc::new(Sum), &input, &o).unwrap();
    let names: Vec<String> = out
        .table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["time", "in.a", "in.b", "anomaly.count", "anomaly.big"]
    );
}

#[test]
fn the_same_table_in_a_directory_is_the_same_run_with_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let input = table(120);
    let o = opts().dir(dir.path());
    let first = parallel_infer_arrow(Arc::new(Sum), &input, &o).unwrap();
    assert_eq!(first.resumed, 0);
    let second = parallel_infer_arrow(Arc::new(Sum), &input, &o).unwrap();
    // Results are acked once returned: the second call computes again, as
    // the same run, and gets the same table (apart from times).
    assert_eq!(second.run, first.run);
    assert_eq!(
        first.table.column_by_name("out.total").unwrap(),
        second.table.column_by_name("out.total").unwrap()
    );
}

#[test]
fn tables_that_cannot_be_read_are_refused_by_column() {
    let input = RecordBatch::try_from_iter([
        ("a", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef,
        ),
    ])
    .unwrap();
    let e = parallel_infer_arrow(Arc::new(Sum), &input, &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'name'"), "{e}");
    let nulls = RecordBatch::try_from_iter([(
        "a",
        Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
    )])
    .unwrap();
    let e = parallel_infer_arrow(Arc::new(Sum), &nulls, &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'a'") && e.contains("null"), "{e}");
}

#[cfg(feature = "onnx")]
#[test]
fn the_onnx_model_over_a_tensor_column_matches_the_fixture() {
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::types::Float32Type;
    use lanelog::worker::OnnxModel;
    let model = OnnxModel::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.onnx"),
        64,
        "probabilities",
    )
    .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/digits_fixture.json"
    ))
    .unwrap();
    let f: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let rows: Vec<Vec<f32>> = f["rows"].as_array().unwrap().iter().map(floats).collect();
    let want: Vec<Vec<f32>> = f["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), 64);
    for r in &rows {
        b.values().append_slice(r);
        b.append(true);
    }
    let input = RecordBatch::try_from_iter([("tensor", Arc::new(b.finish()) as ArrayRef)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = InferOptions::new()
        .pool(PoolOptions::new().num_parallel(2).max_batch(4))
        .dir(dir.path());
    let out = parallel_infer_arrow(Arc::new(model), &input, &o).unwrap();
    let probs = out.table.column_by_name("out.probabilities").unwrap();
    let probs = probs.as_fixed_size_list();
    assert_eq!(probs.value_length(), 10);
    for (i, w) in want.iter().enumerate() {
        let g = probs.value(i);
        let g = g.as_primitive::<Float32Type>();
        for (a, b) in g.values().iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "row {i}: {a} vs {b}");
        }
    }
    assert_eq!(
        out.table.column_by_name("in.tensor").unwrap(),
        input.column(0)
    );
    assert_eq!(out.failed, 0);

    // The same model with both its outputs: one `out.<name>` column each,
    // the label (int64 in the file) cast to f32.
    let both = lanelog::worker::OnnxOutputs::load(
        concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.onnx"),
        64,
        &["label", "probabilities"],
    )
    .unwrap();
    let labels: Vec<f32> = f["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let o = InferOptions::new().pool(PoolOptions::new().num_parallel(2).max_batch(4));
    let out = parallel_infer_arrow(Arc::new(both), &input, &o).unwrap();
    let label = out.table.column_by_name("out.label").unwrap();
    let label = label.as_fixed_size_list();
    assert_eq!(label.value_length(), 1);
    let probs2 = out.table.column_by_name("out.probabilities").unwrap();
    assert_eq!(probs2.as_fixed_size_list().value_length(), 10);
    for (i, l) in labels.iter().enumerate() {
        let got = label.value(i);
        assert_eq!(got.as_primitive::<Float32Type>().value(0), *l, "row {i}");
        assert_eq!(
            probs2.as_fixed_size_list().value(i).as_ref(),
            probs.value(i).as_ref(),
            "row {i}"
        );
    }
}

#[test]
fn a_table_of_several_batches_comes_back_as_as_many_batches() {
    let whole = table(300);
    let parts = [
        whole.slice(0, 120),
        whole.slice(120, 0),
        whole.slice(120, 180),
    ];
    let out =
        lanelog::worker::parallel_infer_arrow_batches(Arc::new(Sum), &parts, &opts()).unwrap();
    assert_eq!(out.tables.len(), 3);
    let sizes: Vec<usize> = out.tables.iter().map(|t| t.num_rows()).collect();
    assert_eq!(sizes, vec![120, 0, 180]);
    // The same rows, the same results as one batch gives.
    let one = parallel_infer_arrow(Arc::new(Sum), &whole, &opts()).unwrap();
    let totals = |t: &RecordBatch| -> Vec<Option<f64>> {
        t.column_by_name("out.total")
            .unwrap()
            .as_primitive::<Float64Type>()
            .iter()
            .collect()
    };
    let joined: Vec<Option<f64>> = out.tables.iter().flat_map(totals).collect();
    assert_eq!(joined, totals(&one.table));
    assert_eq!(out.failed, one.failed);
    // Each result batch carries its own input batch's columns.
    assert_eq!(
        out.tables[2].column_by_name("in.a").unwrap(),
        parts[2].column(0)
    );
    // Batches of different schemas are refused, by index.
    let other =
        RecordBatch::try_from_iter([("z", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef)])
            .unwrap();
    match lanelog::worker::parallel_infer_arrow_batches(Arc::new(Sum), &[whole, other], &opts()) {
        Err(lanelog::worker::InferError::InvalidArgument(m)) => {
            assert!(m.contains("batch 1"), "{m}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Echoes the first value of each row: says which row a result is.
struct First;

impl Model for First {
    type Input = Vec<f32>;
    type Output = f32;
    fn name(&self) -> &str {
        "first"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn infer(&self, rows: &[Vec<f32>]) -> Result<Vec<f32>, ModelError> {
        Ok(rows.iter().map(|r| r[0]).collect())
    }
}

#[test]
fn a_tensor_column_is_the_same_run_as_its_rows_sliced_or_not() {
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::types::Float32Type;
    use lanelog::worker::parallel_infer;
    let rows: Vec<Vec<f32>> = (0..200)
        .map(|i| (0..8).map(|j| (i * 8 + j) as f32).collect())
        .collect();
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), 8);
    for r in &rows {
        b.values().append_slice(r);
        b.append(true);
    }
    let whole = RecordBatch::try_from_iter([("t", Arc::new(b.finish()) as ArrayRef)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = InferOptions::new()
        .pool(PoolOptions::new().num_parallel(2).max_batch(16))
        .dir(dir.path());
    // The rows as vectors compute the run...
    let first = parallel_infer(Arc::new(First), &rows, &o).unwrap();
    assert_eq!(first.resumed, 0);
    // ...and the same rows as a tensor column (read straight from its
    // values), in slices with offsets, are that run: every row resumed.
    let parts = [whole.slice(0, 70), whole.slice(70, 130)];
    let out = lanelog::worker::parallel_infer_arrow_batches(Arc::new(First), &parts, &o).unwrap();
    assert_eq!(out.resumed, rows.len());
    assert_eq!(out.run, first.run);
    let mut got = Vec::new();
    for t in &out.tables {
        let col = t.column_by_name("out.output").unwrap();
        got.extend(col.as_primitive::<Float32Type>().values().iter().copied());
    }
    let want: Vec<f32> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(got, want);
}
