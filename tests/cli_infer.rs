//! Goal: `lanelog infer` writes every row of a CSV or Arrow IPC table once,
//! in input order, with the bundled model's predictions as `OnnxModel`
//! computes them directly; refuses bad input with one line, its exit status
//! and no output file; and a run killed with SIGKILL completes when the same
//! command is run again on the same `--dir`.
//! Method: tables made in a temporary directory from the bundled digits
//! data, the real binary, outputs read back (CSV by hand, Arrow with
//! arrow-ipc); the kill comes once the run's directory shows stored
//! results, read without a lock through `lanelog::inspect`.
#![cfg(feature = "cli")]

mod cli_support;

/// Without the feature the commands are there and say what to build with.
#[cfg(not(feature = "infer-cli"))]
#[test]
fn infer_names_the_feature_it_needs() {
    for args in [
        &["infer"][..],
        &[
            "infer", "--model", "m.onnx", "--input", "a.csv", "--output", "b.csv",
        ],
        &["infer", "--help"],
        &[
            "worker",
            "--nats",
            "nats://127.0.0.1:4222",
            "--model",
            "m.onnx",
        ],
    ] {
        let r = cli_support::lanelog(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("--features infer-cli"), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
}

#[cfg(feature = "infer-cli")]
mod infer {
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt8Array};
    use arrow_schema::DataType;
    use lanelog::inspect::Inspector;

    use super::cli_support::digits::*;
    use super::cli_support::{lanelog, p, Run};

    /// An Arrow IPC file: `id` (Utf8), `pixels` (FixedSizeList<Float32>,
    /// `width` values: the row's first ones) and `label` (UInt8).
    fn write_arrow(path: &Path, rows: &[(String, &[u8], u8)], width: usize) {
        let batch = arrow_table(rows, width);
        let file = std::fs::File::create(path).expect("create arrow");
        let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).expect("writer");
        w.write(&batch).expect("write");
        w.finish().expect("finish");
    }

    /// As [`write_arrow`], as an Arrow IPC stream in two batches.
    fn write_arrow_stream(path: &Path, rows: &[(String, &[u8], u8)]) {
        let batch = arrow_table(rows, FEATURES);
        let file = std::fs::File::create(path).expect("create arrows");
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(file, &batch.schema()).expect("writer");
        let half = batch.num_rows() / 2;
        w.write(&batch.slice(0, half)).expect("write");
        w.write(&batch.slice(half, batch.num_rows() - half))
            .expect("write");
        w.finish().expect("finish");
    }

    fn arrow_table(rows: &[(String, &[u8], u8)], width: usize) -> RecordBatch {
        let mut pixels = FixedSizeListBuilder::new(Float32Builder::new(), width as i32);
        for (_, px, _) in rows {
            for &v in &px[..width] {
                pixels.values().append_value(f32::from(v));
            }
            pixels.append(true);
        }
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))) as ArrayRef,
            ),
            ("pixels", Arc::new(pixels.finish()) as ArrayRef),
            (
                "label",
                Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.2))) as ArrayRef,
            ),
        ])
        .expect("batch")
    }

    fn read_arrow(path: &Path) -> RecordBatch {
        let file = std::fs::File::open(path).expect("open output");
        let reader = arrow_ipc::reader::FileReader::try_new(file, None).expect("arrow output");
        let schema = reader.schema();
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        arrow_select::concat::concat_batches(&schema, &batches).expect("concat")
    }

    fn infer(args: &[&str]) -> Run {
        let mut all = vec!["infer", "--model", MODEL];
        all.extend_from_slice(args);
        lanelog(&all)
    }

    fn ok(r: &Run) {
        assert_eq!(r.code, 0, "stdout {} stderr {}", r.stdout, r.stderr);
    }

    /// Refused: its exit status, one line naming the problem, no output.
    fn refused(r: &Run, code: i32, contains: &str, output: &Path) {
        assert_eq!(r.code, code, "stdout {} stderr {}", r.stdout, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.starts_with("lanelog: "), "{}", r.stderr);
        assert!(
            r.stderr.contains(contains),
            "want {contains:?}: {}",
            r.stderr
        );
        assert!(!output.exists(), "{} was written", output.display());
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }

    /// The `N from an earlier run` of a summary.
    fn resumed(stdout: &str) -> usize {
        let at = stdout.find(" from an earlier run").expect("summary");
        let n = stdout[..at].rsplit(' ').next().expect("count");
        n.parse().expect("resumed count")
    }

    #[test]
    fn csv_rows_come_back_in_order_with_the_models_predictions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let digits = digits();
        let rows = table(&digits, 300, "r");
        let want = direct(
            &digits
                .iter()
                .take(300)
                .map(|d| d.0.clone())
                .collect::<Vec<_>>(),
        );
        let input = tmp.path().join("in.csv");
        write_csv(&input, &rows, false);

        // Default columns (every numeric one), a batch that splits the
        // table unevenly, every option that changes how it runs.
        let out = tmp.path().join("out.csv");
        let r = infer(&[
            "--input",
            p(&input),
            "--output",
            p(&out),
            "--parallel",
            "2",
            "--batch",
            "7",
            "--priority",
            "3",
            "--deadline",
            "10m",
        ]);
        ok(&r);
        assert!(
            r.stdout.contains("300 rows (csv), 0 failed"),
            "{}",
            r.stdout
        );
        assert_eq!(resumed(&r.stdout), 0);
        check_csv(&out, &rows, &want, false);

        // A numeric column that is not a feature, left out with --columns.
        let labelled = tmp.path().join("labelled.csv");
        write_csv(&labelled, &rows, true);
        let names: Vec<String> = (0..FEATURES).map(|i| format!("p{i}")).collect();
        let out = tmp.path().join("labelled-out.csv");
        let r = infer(&[
            "--input",
            p(&labelled),
            "--output",
            p(&out),
            "--columns",
            &names.join(","),
        ]);
        ok(&r);
        check_csv(&out, &rows, &want, true);
    }

    #[test]
    fn arrow_rows_come_back_in_order_with_the_models_predictions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let digits = digits();
        let rows = table(&digits, 257, "a");
        let want = direct(
            &digits
                .iter()
                .take(257)
                .map(|d| d.0.clone())
                .collect::<Vec<_>>(),
        );
        let input = tmp.path().join("in.arrow");
        write_arrow(&input, &rows, FEATURES);

        // The one list column is the features; `id` and `label` pass through.
        let out = tmp.path().join("out.arrow");
        let r = infer(&["--input", p(&input), "--output", p(&out), "--batch", "16"]);
        ok(&r);
        assert!(
            r.stdout.contains("257 rows (arrow), 0 failed"),
            "{}",
            r.stdout
        );
        let t = read_arrow(&out);
        let schema = t.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "time",
                "in.id",
                "in.pixels",
                "in.label",
                "out.probabilities",
                "out.error"
            ]
        );
        assert_eq!(t.num_rows(), rows.len());
        assert!(matches!(
            t.column(0).data_type(),
            DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC"
        ));
        let ids = t.column(1).as_string::<i32>();
        let labels = t.column(3).as_primitive::<arrow_array::types::UInt8Type>();
        let probs = t.column(4).as_fixed_size_list();
        assert_eq!(probs.value_length(), CLASSES as i32);
        assert_eq!(t.column(5).null_count(), rows.len(), "out.error all null");
        for (k, (id, _, label)) in rows.iter().enumerate() {
            assert_eq!(ids.value(k), id, "row {k} out of order");
            assert_eq!(labels.value(k), *label);
            let got = probs.value(k);
            close(got.as_primitive::<Float32Type>().values(), &want[k], k);
        }

        // An Arrow IPC stream of two batches comes back as one table.
        let stream = tmp.path().join("in.arrows");
        write_arrow_stream(&stream, &rows);
        let out = tmp.path().join("from-stream.arrow");
        ok(&infer(&["--input", p(&stream), "--output", p(&out)]));
        let t = read_arrow(&out);
        assert_eq!(t.num_rows(), rows.len());
        let probs = t.column(4).as_fixed_size_list();
        for k in 0..rows.len() {
            assert_eq!(t.column(1).as_string::<i32>().value(k), rows[k].0);
            close(
                probs.value(k).as_primitive::<Float32Type>().values(),
                &want[k],
                k,
            );
        }

        // Arrow in, CSV out: the list columns become one column per value.
        let out = tmp.path().join("from-arrow.csv");
        let r = infer(&[
            "--input",
            p(&input),
            "--output",
            p(&out),
            "--format-out",
            "csv",
        ]);
        ok(&r);
        let (header, lines) = read_csv(&out);
        assert_eq!(header[2], "in.pixels.0");
        assert_eq!(header[2 + FEATURES], "in.label");
        assert_eq!(header[3 + FEATURES], "out.probabilities.0");
        assert_eq!(lines.len(), rows.len());
        for (k, line) in lines.iter().enumerate() {
            assert_eq!(line[1], rows[k].0);
            let got: Vec<f32> = line[3 + FEATURES..3 + FEATURES + CLASSES]
                .iter()
                .map(|v| v.parse().expect("probability"))
                .collect();
            close(&got, &want[k], k);
        }
    }

    #[test]
    fn bad_input_is_refused_with_nothing_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let digits = digits();
        let rows = table(&digits, 20, "r");
        let csv = t.join("in.csv");
        write_csv(&csv, &rows, false);
        let out = t.join("out.csv");
        let (csv, outp) = (p(&csv), p(&out));

        // Missing files.
        let r = lanelog(&[
            "infer",
            "--model",
            p(&t.join("nope.onnx")),
            "--input",
            csv,
            "--output",
            outp,
        ]);
        refused(&r, 6, "nope.onnx: no such file", &out);
        let r = infer(&["--input", p(&t.join("nope.csv")), "--output", outp]);
        refused(&r, 6, "nope.csv: no such file", &out);

        // Unreadable files: not ONNX, not Arrow, not a file.
        let junk = t.join("junk.onnx");
        std::fs::write(&junk, "not a model").expect("write");
        let r = lanelog(&[
            "infer",
            "--model",
            p(&junk),
            "--input",
            csv,
            "--output",
            outp,
        ]);
        refused(&r, 7, "not a loadable ONNX model", &out);
        let junk = t.join("junk.arrow");
        std::fs::write(&junk, "id,p0\nx,1\n").expect("write");
        let r = infer(&["--input", p(&junk), "--output", p(&t.join("o.arrow"))]);
        refused(&r, 7, "not a readable Arrow IPC file", &t.join("o.arrow"));
        let r = infer(&["--input", p(t), "--output", outp, "--format", "csv"]);
        refused(&r, 6, "is a directory", &out);
        let r = infer(&["--input", p(&t.join("in.txt")), "--output", outp]);
        refused(&r, 2, "--format csv", &out);

        // A model output that is not there.
        let r = infer(&["--input", csv, "--output", outp, "--model-output", "nope"]);
        refused(&r, 7, "no output named \"nope\"; its outputs: label", &out);

        // Missing and non-numeric columns.
        let r = infer(&["--input", csv, "--output", outp, "--columns", "p0,nope"]);
        refused(&r, 7, "no column \"nope\"", &out);
        let r = infer(&["--input", csv, "--output", outp, "--columns", "id"]);
        refused(&r, 7, "'id'", &out);
        assert!(r.stderr.contains("not a number"), "{}", r.stderr);
        let holes = t.join("holes.csv");
        std::fs::write(&holes, "id,p0,p1\nr0,1,2\nr1,,3\n").expect("write");
        let r = infer(&["--input", p(&holes), "--output", outp]);
        refused(&r, 7, "'p0': value 1 is null", &out);

        // Rows of the wrong width: ten numeric columns; a list of 63.
        let narrow = t.join("narrow.csv");
        let mut s = String::from("a,b,c,d,e,f,g,h,i,j\n");
        for _ in 0..3 {
            s += "1,2,3,4,5,6,7,8,9,10\n";
        }
        std::fs::write(&narrow, s).expect("write");
        let r = infer(&["--input", p(&narrow), "--output", outp]);
        refused(&r, 7, "give 10 values per row; the model takes 64", &out);
        let short = t.join("short.arrow");
        write_arrow(&short, &rows, FEATURES - 1);
        let r = infer(&["--input", p(&short), "--output", p(&t.join("s.arrow"))]);
        refused(
            &r,
            7,
            "row 0 of column \"pixels\" has 63 values; the model takes 64",
            &t.join("s.arrow"),
        );

        // A --dir that holds something else.
        let r = infer(&["--input", csv, "--output", outp, "--dir", p(t)]);
        refused(&r, 3, "not a directory of lanelog infer", &out);

        // An output that exists: kept unless --force.
        std::fs::write(&out, "keep me").expect("write");
        let r = infer(&["--input", csv, "--output", outp]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("exists: pass --force"), "{}", r.stderr);
        assert_eq!(std::fs::read_to_string(&out).expect("read"), "keep me");
        let r = infer(&["--input", csv, "--output", outp, "--force"]);
        ok(&r);
        assert_eq!(read_csv(&out).1.len(), rows.len());
        std::fs::remove_file(&out).expect("remove");

        // An output whose name says the other format; a bad deadline.
        let r = infer(&["--input", csv, "--output", p(&t.join("o.arrow"))]);
        refused(&r, 2, "--format-out arrow", &t.join("o.arrow"));
        let r = infer(&["--input", csv, "--output", outp, "--deadline", "5"]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.stderr.contains("not a duration"), "{}", r.stderr);
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(t)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".lanelog-infer")
            })
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    /// Stored results of the queue in `dir`, read without its lock (0 while
    /// it cannot be read yet).
    fn results(dir: &Path) -> u64 {
        Inspector::open(dir)
            .and_then(|i| i.stats())
            .map_or(0, |s| s.results)
    }

    #[test]
    fn a_killed_run_completes_when_the_command_is_run_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let digits = digits();
        let want = direct(&digits.iter().map(|d| d.0.clone()).collect::<Vec<_>>());
        // Large enough that a kill at the first stored result comes long
        // before the end; doubled if this machine finished it anyway.
        let mut copies = 20;
        for attempt in 0..3 {
            let rows = table(&digits, copies * digits.len(), "k");
            let input = tmp.path().join(format!("big-{attempt}.csv"));
            write_csv(&input, &rows, false);
            let out = tmp.path().join(format!("big-{attempt}-out.csv"));
            let dir = tmp.path().join(format!("run-{attempt}"));
            let args: Vec<String> = [
                "infer",
                "--model",
                MODEL,
                "--input",
                p(&input),
                "--output",
                p(&out),
                "--dir",
                p(&dir),
                "--parallel",
                "1",
                "--batch",
                "1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut child = Command::new(env!("CARGO_BIN_EXE_lanelog"))
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn lanelog infer");
            // Wait (bounded) for the run's manifest and a stored result.
            let until = Instant::now() + Duration::from_secs(300);
            let finished = loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    break Some(status);
                }
                if results(&dir.join("runs")) >= 1 && results(&dir.join("jobs")) >= 1 {
                    break None;
                }
                assert!(
                    Instant::now() < until,
                    "no progress shown in {}",
                    dir.display()
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            if let Some(status) = finished {
                assert!(status.success(), "first run failed: {status}");
                eprintln!("attempt {attempt}: finished before the kill; trying a larger table");
                copies *= 2;
                continue;
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            assert!(!out.exists(), "a killed run wrote its output");

            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = lanelog(&argv);
            ok(&r);
            assert!(r.stderr.contains("resuming run"), "{}", r.stderr);
            let earlier = resumed(&r.stdout);
            assert!(earlier >= 1, "{}", r.stdout);
            eprintln!(
                "killed and resumed: {earlier} of {} rows were stored",
                rows.len()
            );
            check_csv(&out, &rows, &want, false);

            // Once more: everything is stored, nothing is computed again.
            let r = lanelog(&[argv.as_slice(), &["--force"]].concat());
            ok(&r);
            assert_eq!(resumed(&r.stdout), rows.len(), "{}", r.stdout);
            assert!(r.stdout.contains("nothing left to compute"), "{}", r.stdout);
            check_csv(&out, &rows, &want, false);
            return;
        }
        panic!("every run finished before it could be killed");
    }
}
