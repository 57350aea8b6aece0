//! Redis with an append-only file, as a list and as a sorted set. The
//! server is Debian's `redis-server`, started here on 127.0.0.1 on a free
//! port with its files in the run's temporary directory, and stopped after.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use redis::Value;

use super::{Handle, Store};
use crate::util::{mem_of, payload_seq, Mem, Payloads};

pub const NOT_FOUND: &str = "redis-server not found";

/// A redis-server process owned by this program.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Start redis-server with its files in `dir` and wait until it answers.
    pub fn start(dir: &Path, always: bool) -> Result<Server> {
        let mut server = Server::spawn(dir, always)?;
        server.wait_ready(dir, None)?;
        Ok(server)
    }

    /// Start redis-server without waiting for it (on an existing directory
    /// the caller times the load with `wait_ready`).
    fn spawn(dir: &Path, always: bool) -> Result<Server> {
        if !crate::util::on_path("redis-server") {
            bail!("{NOT_FOUND}");
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", if always { "always" } else { "everysec" }])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .arg("--pidfile")
            .arg(pid_file(dir))
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning redis-server")?;
        Ok(Server { child, port })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Result<redis::Client> {
        Ok(redis::Client::open(format!(
            "redis://127.0.0.1:{}/",
            self.port
        ))?)
    }

    /// Wait until the server answers (and, with `key`, has loaded its data:
    /// returns the length of that key).
    pub fn wait_ready(&mut self, dir: &Path, key: Option<(&str, &str)>) -> Result<i64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        let client = self.client()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                bail!("redis-server exited ({status}): {}", tail.join(" | "));
            }
            let answer = client.get_connection().and_then(|mut c| match key {
                None => redis::cmd("PING").query::<String>(&mut c).map(|_| 0),
                Some((cmd, k)) => redis::cmd(cmd).arg(k).query::<i64>(&mut c),
            });
            match answer {
                Ok(n) => return Ok(n),
                Err(e) if Instant::now() > deadline => bail!("redis-server not ready: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// SHUTDOWN (the AOF is flushed and fsync'd) and wait for the exit.
    pub fn shutdown(mut self) -> Result<()> {
        if let Ok(mut c) = self.client()?.get_connection() {
            // The connection drops as the server exits: an error is expected.
            let _ = redis::cmd("SHUTDOWN").query::<()>(&mut c);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("redis-server did not shut down");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct RedisStore {
    server: Mutex<Option<Server>>,
    client: redis::Client,
    zset: bool,
}

impl RedisStore {
    pub fn start(dir: &Path, zset: bool, always: bool) -> Result<Self> {
        let server = Server::start(dir, always)?;
        let client = server.client()?;
        Ok(RedisStore {
            server: Mutex::new(Some(server)),
            client,
            zset,
        })
    }
}

impl Store for RedisStore {
    fn handle(&self) -> Result<Box<dyn Handle>> {
        Ok(Box::new(RedisHandle {
            conn: self.client.get_connection()?,
            zset: self.zset,
        }))
    }

    fn server_hwm(&self) -> Option<u64> {
        let s = self.server.lock().ok()?;
        let pid = s.as_ref()?.pid();
        Some(mem_of(&pid.to_string()).hwm)
    }

    fn close(self: Box<Self>) -> Result<()> {
        let server = self
            .server
            .into_inner()
            .map_err(|_| anyhow!("poisoned"))?
            .ok_or_else(|| anyhow!("no server"))?;
        server.shutdown()
    }
}

struct RedisHandle {
    conn: redis::Connection,
    zset: bool,
}

/// How many elements a pop reply holds.
fn count(v: &Value, pairs: bool) -> usize {
    match v {
        Value::Nil => 0,
        // BLMPOP / BZMPOP: [key, [elements]]
        Value::Array(a) if a.len() == 2 && matches!(a[1], Value::Array(_)) => match &a[1] {
            Value::Array(inner) => inner.len(),
            _ => 0,
        },
        // RPOP q n: [m, ...]; ZPOPMIN q n: [m, s, m, s, ...] (RESP2)
        Value::Array(a) => {
            if pairs {
                a.len() / 2
            } else {
                a.len()
            }
        }
        _ => 0,
    }
}

impl Handle for RedisHandle {
    fn enqueue(&mut self, items: &[&[u8]]) -> Result<()> {
        let mut cmd = if self.zset {
            redis::cmd("ZADD")
        } else {
            redis::cmd("LPUSH")
        };
        cmd.arg("q");
        for p in items {
            if self.zset {
                cmd.arg(payload_seq(p) as f64);
            }
            cmd.arg(*p);
        }
        let added: i64 = cmd.query(&mut self.conn)?;
        if self.zset && added as usize != items.len() {
            bail!("ZADD added {added} of {}", items.len());
        }
        Ok(())
    }

    fn dequeue(&mut self, max: usize, wait: bool) -> Result<usize> {
        let v: Value = match (self.zset, wait) {
            (false, false) => redis::cmd("RPOP").arg("q").arg(max).query(&mut self.conn)?,
            (true, false) => redis::cmd("ZPOPMIN")
                .arg("q")
                .arg(max)
                .query(&mut self.conn)?,
            (false, true) => redis::cmd("BLMPOP")
                .arg(0.1)
                .arg(1)
                .arg("q")
                .arg("RIGHT")
                .arg("COUNT")
                .arg(max)
                .query(&mut self.conn)?,
            (true, true) => redis::cmd("BZMPOP")
                .arg(0.1)
                .arg(1)
                .arg("q")
                .arg("MIN")
                .arg("COUNT")
                .arg(max)
                .query(&mut self.conn)?,
        };
        Ok(count(&v, self.zset && !wait))
    }

    fn blocks(&self) -> bool {
        true
    }
}

/// What (e) measured on Redis: the server is restarted on its AOF.
pub struct RedisOpen {
    pub secs: f64,
    pub empty: Mem,
    pub loaded: Mem,
}

/// (e) for Redis, all in the child: start an empty server (its memory is
/// the baseline), fill `n` messages with pipelined commands, SHUTDOWN, then
/// start a fresh server process on the same AOF and time it until the key
/// answers with its full length; its memory then is the figure.
pub fn open_cycle(dir: &Path, zset: bool, n: u64, size: usize) -> Result<RedisOpen> {
    let server = Server::start(dir, true)?;
    let empty = mem_of(&server.pid().to_string());
    let mut conn = server.client()?.get_connection()?;
    let mut gen = Payloads::new(size, 1000, 0);
    let mut left = n;
    while left > 0 {
        let mut pipe = redis::pipe();
        for _ in 0..20 {
            if left == 0 {
                break;
            }
            let k = left.min(1000) as usize;
            let mut cmd = redis::cmd(if zset { "ZADD" } else { "LPUSH" });
            cmd.arg("q");
            for p in gen.batch(k) {
                if zset {
                    cmd.arg(payload_seq(p) as f64);
                }
                cmd.arg(p);
            }
            pipe.add_command(cmd).ignore();
            left -= k as u64;
        }
        pipe.query::<()>(&mut conn)?;
    }
    drop(conn);
    server.shutdown()?;
    let t = Instant::now();
    let mut server = Server::spawn(dir, true)?;
    let len = server.wait_ready(dir, Some((if zset { "ZCARD" } else { "LLEN" }, "q")))?;
    let secs = t.elapsed().as_secs_f64();
    let loaded = mem_of(&server.pid().to_string());
    if len as u64 != n {
        bail!("redis loaded {len} messages, expected {n}");
    }
    server.shutdown()?;
    Ok(RedisOpen {
        secs,
        empty,
        loaded,
    })
}

/// The pid file a server started in `dir` leaves, for the parent's cleanup.
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("redis.pid")
}
