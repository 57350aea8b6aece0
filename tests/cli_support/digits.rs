//! The bundled digits model and tables of its data, for the CLI tests
//! that run it (`cli_infer`, `cli_worker`): the model called directly,
//! CSV tables written and read back, results checked row by row.

use std::path::Path;

use lanelog::worker::{Model, OnnxModel};

pub const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits_mlp.onnx");
pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/digits.bin");
pub const FEATURES: usize = 64;
pub const CLASSES: usize = 10;

/// The digits table: 64 pixel values and a label per row.
pub fn digits() -> Vec<(Vec<u8>, u8)> {
    let bytes = std::fs::read(DATA).expect("read digits.bin");
    bytes
        .chunks(FEATURES + 1)
        .map(|r| (r[..FEATURES].to_vec(), r[FEATURES]))
        .collect()
}

/// The model's probabilities for `rows`, called directly.
pub fn direct(rows: &[Vec<u8>]) -> Vec<Vec<f32>> {
    let model = OnnxModel::load(MODEL, FEATURES, "probabilities").expect("load model");
    rows.chunks(64)
        .flat_map(|chunk| {
            let input: Vec<Vec<f32>> = chunk
                .iter()
                .map(|r| r.iter().map(|&v| f32::from(v)).collect())
                .collect();
            model.infer(&input).expect("direct infer")
        })
        .collect()
}

pub fn close(got: &[f32], want: &[f32], row: usize) {
    assert_eq!(got.len(), want.len(), "row {row}: width");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5, "row {row}: {got:?} vs {want:?}");
    }
}

/// A CSV table `id,p0..p63` (and `label` when `label`).
pub fn write_csv(path: &Path, rows: &[(String, &[u8], u8)], label: bool) {
    let mut s = String::from("id");
    for i in 0..FEATURES {
        s += &format!(",p{i}");
    }
    if label {
        s += ",label";
    }
    s.push('\n');
    for (id, pixels, l) in rows {
        s += id;
        for v in *pixels {
            s += &format!(",{v}");
        }
        if label {
            s += &format!(",{l}");
        }
        s.push('\n');
    }
    std::fs::write(path, s).expect("write csv");
}

/// A CSV output: its header and its rows, split on commas (no field
/// of these tables is quoted).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("read output");
    assert!(!text.contains('"'), "a quoted field: {text:.200}");
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect());
    let header = lines.next().expect("header");
    (header, lines.collect())
}

/// `id` `prefix<k>` for each digit row, cycling through the table.
pub fn table<'a>(
    digits: &'a [(Vec<u8>, u8)],
    n: usize,
    prefix: &str,
) -> Vec<(String, &'a [u8], u8)> {
    (0..n)
        .map(|k| {
            let (px, l) = &digits[k % digits.len()];
            (format!("{prefix}{k}"), &px[..], *l)
        })
        .collect()
}

/// Check a CSV result against its input rows and the direct outputs
/// (`want[k % want.len()]` for row `k`).
pub fn check_csv(path: &Path, rows: &[(String, &[u8], u8)], want: &[Vec<f32>], label: bool) {
    let (header, out) = read_csv(path);
    let mut expected = vec!["time".to_string(), "in.id".to_string()];
    expected.extend((0..FEATURES).map(|i| format!("in.p{i}")));
    if label {
        expected.push("in.label".into());
    }
    expected.extend((0..CLASSES).map(|i| format!("out.probabilities.{i}")));
    expected.push("out.error".into());
    assert_eq!(header, expected);
    assert_eq!(out.len(), rows.len(), "row count");
    let first_out = header.len() - 1 - CLASSES;
    for (k, (line, (id, px, _))) in out.iter().zip(rows).enumerate() {
        assert_eq!(line.len(), header.len(), "row {k}: {line:?}");
        assert!(
            line[0].ends_with('Z') && line[0].len() >= 20,
            "time {:?}",
            line[0]
        );
        assert_eq!(&line[1], id, "row {k} out of order");
        let pixels: Vec<u8> = line[2..2 + FEATURES]
            .iter()
            .map(|v| v.parse().expect("pixel"))
            .collect();
        assert_eq!(&pixels[..], *px, "row {k}: input columns");
        let probs: Vec<f32> = line[first_out..first_out + CLASSES]
            .iter()
            .map(|v| v.parse().expect("probability"))
            .collect();
        close(&probs, &want[k % want.len()], k);
        assert_eq!(line[header.len() - 1], "", "row {k}: out.error");
    }
}
