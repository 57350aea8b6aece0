//! How the commands print: aligned tables, byte sizes, durations (measured
//! ones and configured ones), UTC times, hex and payload previews.
//!
//! Invariants: every helper is a pure function of its input, and the
//! output it gives is part of the command line's printed format
//! (docs/cli.md shows it), so a change here changes what users parse.

use std::fmt::Write as _;
use std::time::Duration;

use lanelog::Timestamp;

/// "s" unless `n` is 1.
pub(crate) fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A table row of cells.
pub(crate) fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Rows as aligned columns (two spaces apart); columns in `right` are
/// right-aligned. The last column is never padded.
pub(crate) fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width[i] - c.chars().count();
            if right.contains(&i) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if d.as_secs() < 120 {
        format!("{:.2} s", d.as_secs_f64())
    } else if d.as_secs() < 7200 {
        format!("{} min {} s", d.as_secs() / 60, d.as_secs() % 60)
    } else if d.as_secs() < 2 * 86_400 {
        format!("{} h {} min", d.as_secs() / 3600, d.as_secs() / 60 % 60)
    } else {
        format!("{} d {} h", d.as_secs() / 86_400, d.as_secs() / 3600 % 24)
    }
}

/// A configured duration (an attribute, a retention), exactly and in its
/// largest whole units: "30 s", "5 min", "1 h 30 min", "7 d", "250 ms";
/// "none" for zero.
pub(crate) fn span(d: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let mut ms = d.as_millis();
    if ms == 0 {
        return "none".to_string();
    }
    let mut parts = Vec::new();
    for (size, unit) in UNITS {
        if ms >= size {
            parts.push(format!("{} {unit}", ms / size));
            ms %= size;
        }
    }
    parts.join(" ")
}

/// A time as UTC, "2026-05-02 10:31:07.123Z"; "-" for 0 (unknown).
pub(crate) fn time(t: Timestamp) -> String {
    if t.0 == 0 {
        return "-".to_string();
    }
    let ms = t.0 % 1000;
    let secs = t.0 / 1000;
    let (day, sod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(day as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The proleptic Gregorian date of day `z` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A payload for a table cell: quoted text when it is printable UTF-8,
/// else hex; cut to about 48 characters.
pub(crate) fn preview(b: &[u8]) -> String {
    const MAX: usize = 48;
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => {
            let cut: String = s.chars().take(MAX).collect();
            let more = if cut.len() < s.len() { "…" } else { "" };
            format!("{cut:?}{more}")
        }
        _ => {
            let cut = &b[..b.len().min(MAX / 2)];
            let more = if cut.len() < b.len() { "…" } else { "" };
            format!("0x{}{more}", hex(cut))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(Timestamp(1)), "1970-01-01 00:00:00.001Z");
        assert_eq!(
            time(Timestamp(1_700_000_000_123)),
            "2023-11-14 22:13:20.123Z"
        );
        assert_eq!(time(Timestamp(951_782_400_000)), "2000-02-29 00:00:00.000Z");
        assert_eq!(time(Timestamp(0)), "-");
    }

    #[test]
    fn tables_align() {
        let t = table(&[row(["A", "BB", "C"]), row(["xxx", "1", "tail"])], &[1]);
        assert_eq!(t, "A    BB  C\nxxx   1  tail\n");
        assert_eq!(preview(b"hi"), "\"hi\"");
    }

    #[test]
    fn spans_are_exact_in_whole_units() {
        assert_eq!(span(Duration::ZERO), "none");
        assert_eq!(span(Duration::from_secs(30)), "30 s");
        assert_eq!(span(Duration::from_secs(300)), "5 min");
        assert_eq!(span(Duration::from_secs(5400)), "1 h 30 min");
        assert_eq!(span(Duration::from_secs(7 * 86_400)), "7 d");
        assert_eq!(span(Duration::from_millis(1_250)), "1 s 250 ms");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 120)), "3 h 2 min");
        assert_eq!(duration(Duration::from_secs(3 * 86_400 + 7200)), "3 d 2 h");
        assert_eq!(preview(&[0, 1]), "0x0001");
    }
}
