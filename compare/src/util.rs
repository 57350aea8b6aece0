//! Small helpers shared by the parent and the child processes: payloads,
//! /proc readings, the fdatasync probe and zero-filled preallocation.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// Reusable payload buffers. Every payload starts with its 8-byte sequence
/// number (little endian), so payloads are unique (Redis zset members must
/// be) and the rest is a fixed filler pattern.
pub struct Payloads {
    bufs: Vec<Vec<u8>>,
    next: u64,
}

impl Payloads {
    /// `count` buffers of `size` bytes, numbered from `first`.
    pub fn new(size: usize, count: usize, first: u64) -> Self {
        let filler: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        Payloads {
            bufs: vec![filler; count.max(1)],
            next: first,
        }
    }

    /// The next `k` payloads (at most the count given to `new`).
    pub fn batch(&mut self, k: usize) -> Vec<&[u8]> {
        let k = k.min(self.bufs.len());
        for b in &mut self.bufs[..k] {
            let seq = self.next.to_le_bytes();
            let n = b.len().min(8);
            b[..n].copy_from_slice(&seq[..n]);
            self.next += 1;
        }
        self.bufs[..k].iter().map(Vec::as_slice).collect()
    }
}

/// The sequence number a payload made by [`Payloads`] starts with.
pub fn payload_seq(p: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = p.len().min(8);
    b[..n].copy_from_slice(&p[..n]);
    u64::from_le_bytes(b)
}

/// Memory figures of a process from /proc/PID/status, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
    pub file: u64,
}

/// Read VmRSS, VmHWM and RssAnon of `pid` ("self" for this process).
pub fn mem_of(pid: &str) -> Mem {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Mem {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// Extend `file` from `from` to `to` bytes with written zeros (no sync).
pub fn zero_fill(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// The fdatasync probe taken before every run: 16 writes of 4 KiB into a
/// preallocated (zero-written, fsync'd) file, each followed by fdatasync.
/// Returns the median in microseconds.
pub fn fsync_probe(dir: &Path) -> std::io::Result<f64> {
    let path = dir.join("fsync-probe");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    zero_fill(&file, 0, 16 * 4096)?;
    file.sync_all()?;
    let block = vec![0x5Au8; 4096];
    let mut times = Vec::with_capacity(16);
    for i in 0..16u64 {
        let t = Instant::now();
        file.write_all_at(&block, i * 4096)?;
        file.sync_data()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(median(&mut times).unwrap_or(0.0))
}

/// Median of the values (mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Whether an executable of that name is on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join(name);
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
        })
    })
}

/// `1234567.8` -> `1,234,568`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// UTC date and time of now, `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}
