//! Describe an `open_image` input and what the queue makes of it: the files,
//! the recovery report, the drain, and the reopen. For triaging fuzz finds:
//! `cargo run --example show_image -- fuzz/artifacts/open_image/crash-...`
//! (run in `fuzz/`).

use std::sync::Arc;

use lanelog::codec::header::{FileHeader, FileKind};
use lanelog::codec::{attributes, checkpoint};
use lanelog::storage::Storage;
use lanelog::{ManualClock, Timestamp};
use testkit::fuzz::image;

fn main() {
    let path = std::env::args().nth(1).expect("usage: show_image FILE");
    let data = std::fs::read(&path).expect("read input");
    let (flags, files) = image::parse(&data);
    println!("flags {flags:#04b}, {} files", files.len());
    let storage = image::build(&files);
    for name in storage.list().expect("list") {
        let file = storage.open(&name).expect("open");
        let mut bytes = vec![0; file.len().expect("len") as usize];
        file.read_at(0, &mut bytes).expect("read");
        let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        println!(
            "  {name}: {} bytes ({used} up to the last non-zero byte)",
            bytes.len()
        );
        if name.ends_with(".ckp") {
            let mut got = checkpoint::Collected::default();
            let r = checkpoint::decode(&bytes, &mut got);
            for s in &got.segments {
                println!(
                    "    segment {}: {} records, largest payload {}",
                    s.id, s.records, s.largest
                );
            }
            for m in &got.messages {
                println!("    message {m:?}");
            }
            for (id, r) in &got.reasons {
                println!("    reason of {id}: {r:?}");
            }
            for (id, at, key) in &got.keys {
                println!(
                    "    key of {id} (seen at {at}): {:?}",
                    String::from_utf8_lossy(key)
                );
            }
            for (id, at) in &got.marks {
                println!("    retention mark: ids from {id} enqueued at {at}");
            }
            println!("    {r:?}");
        }
        if name.ends_with(".lla") {
            println!("    {:?}", attributes::decode(&bytes));
        }
        for kind in [FileKind::Segment, FileKind::Journal, FileKind::Checkpoint] {
            if let Ok(h) = FileHeader::decode(kind, &bytes) {
                println!(
                    "    header: {kind:?} {} version {}, created at {}",
                    h.id, h.version, h.created_ms
                );
            }
        }
    }
    let clock = ManualClock::new(Timestamp(image::T0));
    let opts = image::options(&clock);
    match opts
        .clone()
        .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
    {
        Ok(q) => {
            println!("opened: {:#?}", q.recovery_report());
            println!("stats: {:#?}", q.stats());
        }
        Err(e) => println!("open refused: {e}"),
    }
    println!("by hand: drain, enqueue, close, reopen");
    {
        let q = opts
            .clone()
            .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
            .expect("open");
        for _ in 0..10 {
            let b = q.dequeue_up_to(16).expect("dequeue");
            for d in &b {
                println!("  delivered {} p{} attempt {}", d.id, d.priority, d.attempt);
                q.ack(d.receipt).expect("ack");
            }
            clock.advance(std::time::Duration::from_secs(3600));
        }
        println!("  dead letters {:?}", q.dead_letters().expect("dead"));
        println!("  redrive_all {:?}", q.redrive_all());
        println!("  stats {:?}", q.stats());
        let b = q.dequeue_up_to(16);
        println!(
            "  after redrive: {:?}",
            b.as_ref()
                .map(|b| b.iter().map(|d| (d.id, d.attempt)).collect::<Vec<_>>())
        );
        if let Ok(b) = b {
            for d in b {
                println!("  ack {:?}", q.ack(d.receipt));
            }
        }
        println!("  purge {:?}", q.purge_dead_letters());
        let id = q.enqueue(b"after the drain", 255).expect("enqueue");
        println!("  enqueued {id}; stats {:?}", q.stats());
        q.close().expect("close");
        let q = opts
            .clone()
            .open_storage(Arc::new(storage.clone()) as Arc<dyn Storage>)
            .expect("reopen");
        println!(
            "  reopened: {:?}\n  stats {:?}",
            q.recovery_report(),
            q.stats()
        );
        for name in storage.list().expect("list") {
            println!("  file {name}");
        }
    }
    println!("running the target:");
    image::run(&data);
    println!("the target passed");
}
