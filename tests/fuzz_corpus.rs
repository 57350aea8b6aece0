//! Goal: every input committed for the fuzz targets, the seed corpora
//! (`fuzz/corpus/<target>/`) and the inputs of bugs the fuzzers found
//! (`fuzz/regressions/<target>/`), still passes its target's checks.
//! Method: each input through the same function the libFuzzer target calls
//! (`testkit::fuzz`), in this build: no libFuzzer, no AddressSanitizer
//! (`.ci/fuzz.sh` runs the targets under both, and fuzzes for new inputs).
//! A failing input is named before its panic.

use std::path::{Path, PathBuf};

/// What a target checks of one input (panics on a finding).
type Check = fn(&[u8]);

/// Each target and its check.
const TARGETS: [(&str, Check); 6] = [
    ("decode_record", testkit::fuzz::decode::record),
    ("decode_entry", testkit::fuzz::decode::entry),
    (
        "decode_checkpoint",
        testkit::fuzz::decode::checkpoint_and_scan,
    ),
    ("decode_attributes", testkit::fuzz::decode::attributes),
    ("open_image", testkit::fuzz::image::run),
    ("ops_with_crashes", testkit::fuzz::ops::run),
];

/// The files of `dir` in name order (none when it is missing).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (target, check) in TARGETS {
        let mut n = 0;
        for kind in ["corpus", "regressions"] {
            for file in inputs(&root.join(kind).join(target)) {
                let data = std::fs::read(&file).expect("read a fuzz input");
                eprintln!("{target}: {}", file.display());
                check(&data);
                n += 1;
            }
        }
        // Every target has a seed corpus: an empty one means the layout
        // moved and this test would pass on nothing.
        assert!(n > 0, "{target}: no inputs under {}", root.display());
        println!("{target}: {n} inputs");
    }
}
