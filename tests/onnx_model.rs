//! Goal: the bundled ONNX model runs in tract and matches what onnxruntime
//! computed when the model was made; bad files and rows get clear errors.
//! Method: compare against models/digits_fixture.json (made by
//! models/make_model.py), then run the whole digits table through
//! `parallel_infer`.
#![cfg(feature = "onnx")]

use std::sync::Arc;

use lanelog::worker::{parallel_infer, InferOptions, Model, OnnxModel, PoolOptions};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.onnx");

fn fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/digits_fixture.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn outputs_match_the_fixture() {
    let model = OnnxModel::load(MODEL, 64, "probabilities").unwrap();
    let f = fixture();
    let rows: Vec<Vec<f32>> = f["rows"].as_array().unwrap().iter().map(floats).collect();
    let want: Vec<Vec<f32>> = f["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let got = model.infer(&rows).unwrap();
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
    // One row at a time gives the same answers as the batch.
    assert_eq!(model.infer(&rows[..1]).unwrap()[0], got[0]);
    assert!(model.version().starts_with("fnv64:"));
}

#[test]
fn bad_rows_and_files_get_clear_errors() {
    let model = OnnxModel::load(MODEL, 64, "probabilities").unwrap();
    let err = model.infer(&[vec![0.0; 63]]).unwrap_err();
    assert!(err.message().contains("63 values"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let err = OnnxModel::load(&junk, 64, "probabilities").unwrap_err();
    assert!(err.message().contains("junk.onnx"), "{err}");
    assert!(OnnxModel::load(dir.path().join("missing.onnx"), 64, "probabilities").is_err());
}

#[test]
fn the_whole_table_through_parallel_infer() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits.bin")).unwrap();
    let rows: Vec<Vec<f32>> = bytes
        .chunks(65)
        .map(|r| r[..64].iter().map(|&b| f32::from(b)).collect())
        .collect();
    let labels: Vec<u8> = bytes.chunks(65).map(|r| r[64]).collect();
    let model = Arc::new(OnnxModel::load(MODEL, 64, "probabilities").unwrap());
    let opts = InferOptions::new().pool(PoolOptions::new().num_parallel(2).max_batch(64));
    let out = parallel_infer(model, &rows, &opts).unwrap();
    let correct = out
        .rows
        .iter()
        .zip(&labels)
        .filter(|(r, &l)| {
            let p = r.output.as_ref().unwrap().as_ref().unwrap();
            let best = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            best == usize::from(l)
        })
        .count();
    assert_eq!(out.rows.len(), 1797);
    assert!(correct * 100 / 1797 >= 90, "accuracy {correct}/1797");
}
