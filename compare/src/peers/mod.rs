//! The rows of the comparison: every queue behind one small interface.

use std::path::Path;

use anyhow::Result;

pub mod fjallq;
pub mod jetstreamq;
pub mod lanelogq;
pub mod rawlog;
pub mod redisq;
pub mod sqliteq;
pub mod yaqueq;

/// One thread's handle on an open queue.
pub trait Handle: Send {
    /// Enqueue `items` (priority 0) in one call, durable as the row says.
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()>;
    /// Take up to `max` messages and acknowledge them, durable as the row
    /// says. Returns how many. With `wait` the caller is a consumer running
    /// beside a producer: the peer may block briefly for a first message.
    fn dequeue(&mut self, max: usize, wait: bool) -> Result<usize>;
    /// Whether `dequeue(.., true)` blocks by itself when the queue is empty
    /// (otherwise the caller backs off with a short sleep).
    fn blocks(&self) -> bool {
        false
    }
}

/// An open queue: hands out handles for threads, then closes.
pub trait Store: Send + Sync {
    fn handle(&self) -> Result<Box<dyn Handle>>;
    /// Peak resident memory of a server process, if the row has one.
    fn server_hwm(&self) -> Option<u64> {
        None
    }
    fn close(self: Box<Self>) -> Result<()>;
}

/// A row of the tables.
#[derive(Debug, Clone, Copy)]
pub struct PeerInfo {
    pub name: &'static str,
    /// Durable when the enqueue (or ack) call returns.
    pub durable: bool,
    /// The row of the same family whose (e) cell stands for this one, when
    /// both keep the same files.
    pub open_as: Option<&'static str>,
    /// Needs redis-server on PATH.
    pub redis: bool,
    /// lanelog's JetStream backend on nats-server processes the row starts
    /// (no (e) cell: a server's start is not a queue's open).
    pub jetstream: bool,
    /// What the row is, for the legend.
    pub what: &'static str,
}

pub const PEERS: &[PeerInfo] = &[
    PeerInfo {
        name: "lanelog",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: false,
        what: "lanelog, `Durability::Immediate`: enqueue_batch / enqueue (one fdatasync per call, concurrent callers share one); dequeue_up_to (or dequeue_with + wait in mixed) then ack_batch (one fdatasync). At-least-once: ready -> delivered -> acked.",
    },
    PeerInfo {
        name: "lanelog-none",
        durable: false,
        open_as: Some("lanelog"),
        redis: false,
        jetstream: false,
        what: "lanelog, `Durability::None` (NOT durable against power loss; a process crash loses nothing). Same calls as `lanelog`.",
    },
    PeerInfo {
        name: "rawlog",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: false,
        what: "The physical limit: one file growing by pwrite at its end; enqueue = one pwrite of the length-prefixed batch + fdatasync; dequeue = pread of the payloads + an 8-byte ack record + fdatasync; in-memory offset index, no checksums, no checkpoint (open = full scan). At-most-once-ish, no leases.",
    },
    PeerInfo {
        name: "rawlog-prealloc",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: false,
        what: "rawlog writing into space preallocated like lanelog's segments: the file is grown in 64 MiB steps by writing zeros and fsync (set_len + zero writes + fsync), so fdatasync has no size change to commit. The growth steps are inside the timed loop, as lanelog's new segments are.",
    },
    PeerInfo {
        name: "sqlite-full",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: false,
        what: "SQLite (rusqlite 0.41, bundled) as a queue: WAL, synchronous=FULL; table q(id INTEGER PRIMARY KEY, priority, state, payload BLOB) + index (state, priority, id); enqueue = BEGIN IMMEDIATE + INSERT x B + COMMIT; dequeue = one transaction `DELETE ... WHERE id IN (SELECT id ... WHERE state=0 ORDER BY priority, id LIMIT n) RETURNING payload` (at-most-once: no delivered state). Threads share one connection behind a Mutex.",
    },
    PeerInfo {
        name: "sqlite-normal",
        durable: false,
        open_as: Some("sqlite-full"),
        redis: false,
        jetstream: false,
        what: "As sqlite-full with synchronous=NORMAL (NOT durable: a power loss may lose commits since the last checkpoint).",
    },
    PeerInfo {
        name: "redis-list-always",
        durable: true,
        open_as: None,
        redis: true,
        jetstream: false,
        what: "redis-server (Debian) with --appendonly yes --appendfsync always, as a list: enqueue = one LPUSH q m1..mB; dequeue = RPOP q B (BLMPOP in mixed). At-most-once. One connection per thread.",
    },
    PeerInfo {
        name: "redis-list-everysec",
        durable: false,
        open_as: Some("redis-list-always"),
        redis: true,
        jetstream: false,
        what: "As redis-list-always with appendfsync everysec (NOT durable: loses about the last second on power loss).",
    },
    PeerInfo {
        name: "redis-zset-always",
        durable: true,
        open_as: None,
        redis: true,
        jetstream: false,
        what: "redis-server, appendfsync always, as a priority queue: enqueue = one ZADD q s1 m1 ... (score = sequence); dequeue = ZPOPMIN q B (BZMPOP in mixed). At-most-once.",
    },
    PeerInfo {
        name: "redis-zset-everysec",
        durable: false,
        open_as: Some("redis-zset-always"),
        redis: true,
        jetstream: false,
        what: "As redis-zset-always with appendfsync everysec (NOT durable).",
    },
    PeerInfo {
        name: "jetstream-1-always",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: true,
        what: "lanelog's JetStream backend (lanelog::nats, async-nats) on one nats-server 2.15.1 on loopback with sync_interval: always (a write is fsynced before its publish is acknowledged): enqueue_batch_with = pipelined publishes, each acknowledged; dequeue_with = pull fetches, then ack_batch = one acknowledged ack per message. At-least-once, with leases (the consumer's ack wait).",
    },
    PeerInfo {
        name: "jetstream-1-default",
        durable: false,
        open_as: None,
        redis: false,
        jetstream: true,
        what: "As jetstream-1-always with the server's default sync (every 2 minutes: NOT durable against power loss).",
    },
    PeerInfo {
        name: "jetstream-3-always",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: true,
        what: "As jetstream-1-always on a 3-node cluster on this machine (all three on loopback, one disk), streams replicated three times (a publish is acknowledged once a quorum stored it).",
    },
    PeerInfo {
        name: "jetstream-3-default",
        durable: false,
        open_as: None,
        redis: false,
        jetstream: true,
        what: "As jetstream-3-always with the server's default sync (NOT durable against a power loss of the quorum).",
    },
    PeerInfo {
        name: "fjall",
        durable: true,
        open_as: None,
        redis: false,
        jetstream: false,
        what: "fjall 3 (LSM): enqueue = WriteBatch of inserts (key = u64 sequence, big endian) with PersistMode::SyncAll; dequeue = range from an in-memory cursor + WriteBatch of removes with SyncAll. At-most-once.",
    },
    PeerInfo {
        name: "yaque",
        durable: false,
        open_as: None,
        redis: false,
        jetstream: false,
        what: "yaque 0.6 as shipped (NOT durable: never fsyncs): send_batch; try_recv_batch_up_to + commit (receiver position saved every 250 reads).",
    },
    PeerInfo {
        name: "yaque-fsync",
        durable: true,
        open_as: Some("yaque"),
        redis: false,
        jetstream: false,
        what: "yaque plus the harness's fdatasync of the newest segment after send_batch, and save() + fdatasync of recv-metadata after each commit (no directory fsync on a new segment: an approximation of a durable yaque).",
    },
];

pub fn info(name: &str) -> Option<&'static PeerInfo> {
    PEERS.iter().find(|p| p.name == name)
}

/// Open the row's queue in an empty directory.
pub fn open(name: &str, dir: &Path) -> Result<Box<dyn Store>> {
    Ok(match name {
        "lanelog" => Box::new(lanelogq::LanelogStore::open(dir, true)?),
        "lanelog-none" => Box::new(lanelogq::LanelogStore::open(dir, false)?),
        "rawlog" => Box::new(rawlog::RawStore::create(dir, false)?),
        "rawlog-prealloc" => Box::new(rawlog::RawStore::create(dir, true)?),
        "sqlite-full" => Box::new(sqliteq::SqliteStore::open(dir, true)?),
        "sqlite-normal" => Box::new(sqliteq::SqliteStore::open(dir, false)?),
        "redis-list-always" => Box::new(redisq::RedisStore::start(dir, false, true)?),
        "redis-list-everysec" => Box::new(redisq::RedisStore::start(dir, false, false)?),
        "redis-zset-always" => Box::new(redisq::RedisStore::start(dir, true, true)?),
        "redis-zset-everysec" => Box::new(redisq::RedisStore::start(dir, true, false)?),
        "fjall" => Box::new(fjallq::FjallStore::open(dir)?),
        "jetstream-1-always" => Box::new(jetstreamq::JetStreamStore::start(dir, 1, true)?),
        "jetstream-1-default" => Box::new(jetstreamq::JetStreamStore::start(dir, 1, false)?),
        "jetstream-3-always" => Box::new(jetstreamq::JetStreamStore::start(dir, 3, true)?),
        "jetstream-3-default" => Box::new(jetstreamq::JetStreamStore::start(dir, 3, false)?),
        "yaque" => Box::new(yaqueq::YaqueStore::open(dir, false)?),
        "yaque-fsync" => Box::new(yaqueq::YaqueStore::open(dir, true)?),
        other => anyhow::bail!("unknown peer {other}"),
    })
}

/// (e), first half: fill `n` pending messages of `size` bytes as fast as
/// the row allows, then close cleanly. Runs in the child.
pub fn fill_pending(name: &str, dir: &Path, n: u64, size: usize) -> Result<()> {
    match name {
        "lanelog" => lanelogq::fill(dir, n, size),
        "rawlog" => rawlog::fill(dir, n, size, false),
        "rawlog-prealloc" => rawlog::fill(dir, n, size, true),
        "sqlite-full" => sqliteq::fill(dir, n, size),
        "fjall" => fjallq::fill(dir, n, size),
        "yaque" => yaqueq::fill(dir, n, size),
        other => anyhow::bail!("no fill for {other}"),
    }
}

/// What (e)'s second half measured.
pub struct Opened {
    /// Seconds from the open call until the queue can serve.
    pub secs: f64,
    /// Memory right after the open (before any check).
    pub mem: crate::util::Mem,
    /// What the check found, for example the pending count.
    pub note: String,
}

/// (e), second half: open the filled queue and make it ready to serve.
/// Runs in a fresh grandchild process that does nothing else.
pub fn open_only(name: &str, dir: &Path, n: u64) -> Result<Opened> {
    match name {
        "lanelog" => lanelogq::open_only(dir, n),
        "rawlog" => rawlog::open_only(dir, n, false),
        "rawlog-prealloc" => rawlog::open_only(dir, n, true),
        "sqlite-full" => sqliteq::open_only(dir),
        "fjall" => fjallq::open_only(dir),
        "yaque" => yaqueq::open_only(dir),
        other => anyhow::bail!("no open for {other}"),
    }
}
