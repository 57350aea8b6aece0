//! `lanelog bench`: enqueue from producer threads, then dequeue and ack in
//! batches, in a temporary directory, and print rates and latencies.
//!
//! Invariants: the directory is made under a fresh temporary directory and
//! removed afterwards, so a bench never touches an existing queue; the
//! numbers are printed only after the queue is closed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lanelog::{Durability, QueueOptions};

use crate::format::{duration, plural, row, table};
use crate::{fail, lib_error, Failure, Output, IO, NOT_A_QUEUE};

/// `lanelog bench`'s options.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// immediate (sync every call), periodic:MS (sync every MS ms), or none
    #[arg(long, value_name = "MODE", default_value = "immediate", value_parser = parse_durability)]
    durability: Durability,
    /// Payload size: bytes, or with a K or M suffix (KiB, MiB)
    #[arg(long, value_name = "BYTES", default_value = "128", value_parser = parse_size)]
    size: usize,
    /// Producer threads
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    /// Messages in all [default: 2000 with immediate durability, else 200000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: Option<u64>,
    /// Where to make the temporary directory (default: the system's)
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    match s {
        "immediate" => Ok(Durability::Immediate),
        "none" => Ok(Durability::None),
        "periodic" => Ok(Durability::Periodic(Duration::from_millis(100))),
        _ => match s.strip_prefix("periodic:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(Durability::Periodic(Duration::from_millis(ms))),
            _ => Err("expected immediate, none, or periodic:MS with MS > 0".to_string()),
        },
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 128, 1K, 4M)"))?;
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return Err(format!("{s:?}: unknown unit (use K or M)")),
    };
    let bytes = n
        .checked_mul(unit)
        .filter(|&b| b <= lanelog::DEFAULT_MAX_MESSAGE_SIZE)
        .ok_or_else(|| {
            format!(
                "{s:?} is over the largest payload ({} bytes)",
                lanelog::DEFAULT_MAX_MESSAGE_SIZE
            )
        })?;
    Ok(bytes)
}

fn durability_name(d: Durability) -> String {
    match d {
        Durability::Immediate => "immediate".to_string(),
        Durability::Periodic(every) => format!("periodic:{}", every.as_millis()),
        Durability::None => "none".to_string(),
        other => format!("{other:?}"),
    }
}

fn histogram() -> Result<Histogram<u64>, Failure> {
    // Nanoseconds, 1 ns to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .map_err(|e| fail(IO, format!("cannot make a histogram: {e}")))
}

pub(crate) fn bench(a: &BenchArgs) -> Result<Output, Failure> {
    let parent = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("lanelog-bench-")
        .tempdir_in(&parent)
        .map_err(|e| {
            fail(
                NOT_A_QUEUE,
                format!("{}: cannot make a directory there: {e}", parent.display()),
            )
        })?;
    let dir = tmp.path().join("queue");
    let q = QueueOptions::new()
        .durability(a.durability)
        .open(&dir)
        .map_err(|e| lib_error(&dir, e))?;
    let threads = u64::from(a.threads);
    let messages = a.messages.unwrap_or(match a.durability {
        Durability::Immediate => 2_000,
        _ => 200_000,
    });
    eprintln!("lanelog bench: in {}", tmp.path().display());
    let title = format!(
        "{messages} messages of {} B, {threads} producer thread{}, durability {}\n",
        a.size,
        plural(threads),
        durability_name(a.durability),
    );
    let payload = vec![0xA5u8; a.size];
    let bar = ProgressBar::with_draw_target(Some(messages), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("enqueue");
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<Result<Histogram<u64>, Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (q, payload, bar, next, dir) = (&q, &payload, &bar, &next, &dir);
                scope.spawn(move || -> Result<Histogram<u64>, Failure> {
                    let mut h = histogram()?;
                    let mut pending = 0;
                    // Threads take messages from one counter, so all finish together.
                    while next.fetch_add(1, Ordering::Relaxed) < messages {
                        let t0 = Instant::now();
                        q.enqueue(payload, (t % 4) as u8)
                            .map_err(|e| lib_error(dir, e))?;
                        h.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
                        pending += 1;
                        if pending == 64 {
                            bar.inc(pending);
                            pending = 0;
                        }
                    }
                    bar.inc(pending);
                    Ok(h)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(fail(IO, "a producer thread failed")))
            })
            .collect()
    });
    let enqueue_time = started.elapsed();
    bar.finish_and_clear();
    let mut latency = histogram()?;
    for r in results {
        latency
            .add(r?)
            .map_err(|e| fail(IO, format!("cannot merge histograms: {e}")))?;
    }

    let bar = ProgressBar::with_draw_target(Some(messages), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("dequeue+ack");
    let started = Instant::now();
    let mut consumed = 0u64;
    while consumed < messages {
        let batch = q.dequeue_up_to(256).map_err(|e| lib_error(&dir, e))?;
        if batch.is_empty() {
            break;
        }
        let receipts: Vec<_> = batch.iter().map(|d| d.receipt).collect();
        q.ack_batch(&receipts).map_err(|e| lib_error(&dir, e))?;
        consumed += receipts.len() as u64;
        bar.inc(receipts.len() as u64);
    }
    let consume_time = started.elapsed();
    bar.finish_and_clear();
    q.close().map_err(|e| lib_error(&dir, e))?;
    drop(tmp);

    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(1e-9);
    let mb = |n: u64, t: Duration| rate(n, t) * a.size as f64 / 1e6;
    let ns = |q: f64| duration(Duration::from_nanos(latency.value_at_quantile(q)));
    let mut rows = vec![row([
        "enqueue",
        &format!("{:.0} msgs/s", rate(messages, enqueue_time)),
        &format!("{:.2} MB/s", mb(messages, enqueue_time)),
        &format!("in {}", duration(enqueue_time)),
    ])];
    rows.push(row([
        "  latency",
        &format!("p50 {}", ns(0.5)),
        &format!("p99 {}", ns(0.99)),
        &format!(
            "p99.9 {}   max {}",
            ns(0.999),
            duration(Duration::from_nanos(latency.max()))
        ),
    ]));
    rows.push(row([
        "dequeue+ack",
        &format!("{:.0} msgs/s", rate(consumed, consume_time)),
        &format!("{:.2} MB/s", mb(consumed, consume_time)),
        &format!("in {}", duration(consume_time)),
    ]));
    Ok(Output::ok(title + &table(&rows, &[1, 2])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_modes_parse() {
        assert_eq!(parse_size("128"), Ok(128));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert!(parse_size("5M").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(
            parse_durability("periodic:5"),
            Ok(Durability::Periodic(Duration::from_millis(5)))
        );
        assert!(parse_durability("periodic:0").is_err());
        assert!(parse_durability("sometimes").is_err());
    }
}
