//! Open (recovery) time and resident memory of a big queue, each open in a
//! fresh process so that nothing the filling left in memory counts:
//!
//! 1. `pending` 128 B messages waiting (default 10,000,000), after a clean
//!    close and after a process crash (no checkpoint at close: the journal
//!    and segments are replayed);
//! 2. a queue with `history` messages enqueued and acked over its life
//!    (default 100,000,000) and 1,000 still pending, after a clean close;
//! 3. a tenth of `pending` messages that each carry a deadline, then as
//!    many that each carry a 24-byte idempotency key, after a clean close
//!    (what a deadline and a remembered key cost in memory).
//!
//! Prints the open time and the resident memory after open, per pending
//! message (payloads stay on disk; the index holds 16-byte slots).
//!
//! Run: `cargo run --release --example open_time [pending] [history]`.
//! Needs about 1.7 GB of disk per 10M pending messages (under the system's
//! temporary directory).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lanelog::{Durability, EnqueueOptions, QueueOptions, Timestamp};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--open") {
        return open_child(Path::new(&args[2]));
    }
    if args.get(1).map(String::as_str) == Some("--fill") {
        let n = |i: usize| args[i].parse::<u64>();
        fill(
            Path::new(&args[2]),
            n(3)?,
            n(4)?,
            args[5] == "clean",
            &args[6],
        )?;
        // A crash: exit without the checkpoint that close or drop takes.
        std::process::exit(0);
    }
    let pending: u64 = args.get(1).map_or(Ok(10_000_000), |a| a.parse())?;
    let history: u64 = args.get(2).map_or(Ok(100_000_000), |a| a.parse())?;
    let exe = std::env::current_exe()?;
    let fill_with = |dir: &Path,
                     pending: u64,
                     history: u64,
                     clean: bool,
                     kind: &str|
     -> Result<(), Box<dyn std::error::Error>> {
        let how = if clean { "clean" } else { "crash" };
        let out = Command::new(&exe)
            .arg("--fill")
            .arg(dir)
            .args([pending.to_string(), history.to_string(), how.to_string()])
            .arg(kind)
            .output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(())
    };
    let fill = |dir: &Path, pending: u64, history: u64, clean: bool| {
        fill_with(dir, pending, history, clean, "plain")
    };
    let open = |dir: &Path| -> Result<String, Box<dyn std::error::Error>> {
        let out = Command::new(&exe).arg("--open").arg(dir).output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };

    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    fill(dir.path(), pending, 0, true)?;
    eprintln!("filled {pending} pending in {:?}", t.elapsed());
    println!("{pending} pending, clean close: {}", open(dir.path())?);
    drop(dir);

    let dir = tempfile::tempdir()?;
    fill(dir.path(), pending, 0, false)?;
    println!(
        "{pending} pending, no checkpoint (crash): {}",
        open(dir.path())?
    );
    drop(dir);

    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    fill(dir.path(), 1000, history, true)?;
    eprintln!("filled a history of {history} in {:?}", t.elapsed());
    println!(
        "{history} acked + 1000 pending, clean close: {}",
        open(dir.path())?
    );
    drop(dir);

    for kind in ["deadline", "key"] {
        let dir = tempfile::tempdir()?;
        let n = (pending / 10).max(1000);
        fill_with(dir.path(), n, 0, true, kind)?;
        println!(
            "{n} pending, each with a {kind}, clean close: {}",
            open(dir.path())?
        );
    }
    Ok(())
}

/// Enqueue `history` messages and ack them, then leave `pending` waiting.
/// `clean`: close (checkpoint); otherwise leave it open (the caller exits
/// as a crash would), after a sync, with no checkpoint.
/// `kind`: "plain", or every pending message with a "deadline" (a day
/// ahead) or a 24-byte idempotency "key".
fn fill(dir: &Path, pending: u64, history: u64, clean: bool, kind: &str) -> lanelog::Result<()> {
    let q = QueueOptions::new()
        .durability(Durability::None)
        .checkpoint_bytes(u64::MAX)
        .open(dir)?;
    let payload = [7u8; 128];
    let batch: Vec<(&[u8], u8)> = vec![(&payload[..], 0); 1000];
    let mut left = history;
    while left > 0 {
        let k = left.min(1000) as usize;
        q.enqueue_batch(&batch[..k])?;
        let ds = q.dequeue_up_to(k)?;
        let receipts: Vec<_> = ds.iter().map(|d| d.receipt).collect();
        q.ack_batch(&receipts)?;
        left -= k as u64;
    }
    let mut left = pending;
    let far = Timestamp::now().plus(Duration::from_secs(86_400));
    while left > 0 {
        let k = left.min(1000) as usize;
        if kind == "plain" {
            q.enqueue_batch(&batch[..k])?;
        } else {
            let items: Vec<(&[u8], EnqueueOptions)> = (0..k as u64)
                .map(|i| {
                    let n = pending - left + i;
                    let opts = if kind == "deadline" {
                        EnqueueOptions::new().deadline(Timestamp(far.0 + n % 3_600_000))
                    } else {
                        EnqueueOptions::new().key(format!("request-{n:016}"))
                    };
                    (&payload[..], opts)
                })
                .collect();
            q.enqueue_batch_with(&items)?;
        }
        left -= k as u64;
    }
    q.sync()?;
    if clean {
        q.close()
    } else {
        std::mem::forget(q);
        Ok(())
    }
}

fn open_child(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let before = status_kib("RssAnon:");
    let t = Instant::now();
    let q = QueueOptions::new().open(dir)?;
    let took: Duration = t.elapsed();
    let (anon, rss) = (status_kib("RssAnon:"), status_kib("VmRSS:"));
    let ready = q.stats().ready;
    println!(
        "open {took:?}, {ready} ready; resident {} MiB ({} MiB anonymous, +{} MiB by the open: {:.1} bytes per pending message; file pages read through the maps are the rest)",
        rss / 1024,
        anon / 1024,
        anon.saturating_sub(before) / 1024,
        anon.saturating_sub(before) as f64 * 1024.0 / ready.max(1) as f64
    );
    std::mem::forget(q);
    Ok(())
}

/// A `/proc/self/status` figure in KiB (0 where /proc is missing).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
