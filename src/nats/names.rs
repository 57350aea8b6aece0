//! Every name the backend puts on the server (streams, consumers,
//! subjects) and every header it writes, with their encoding. Pure.
//!
//! For a queue prefix `P` (letters, digits, `_` and `-`):
//!
//! | what | stream | subjects |
//! |---|---|---|
//! | jobs, one subject per lane band `B` | `P_JOBS` (work queue) | `P.jobs.B` |
//! | dead letters, one subject per id | `P_DEAD` | `P.dead.ID` |
//! | results, one subject per id | `P_RESULTS` | `P.results.ID` |
//! | idempotency keys, one per key (hex) | `P_KEYS` | `P.keys.HEX` |
//! | wake-ups (core NATS, not stored) | — | `P.wake` |
//!
//! Band `B`'s durable pull consumer is `P_band_B`.

use async_nats::HeaderMap;

use crate::{Error, Result, Timestamp};

/// Header: the job's id when it differs from the stream sequence (a
/// redriven message keeps the id it was enqueued with).
pub(crate) const ID: &str = "Lanelog-Id";
/// Header: the message's priority (its band is coarser).
pub(crate) const PRIORITY: &str = "Lanelog-Priority";
/// Header: enqueue time, ms since the Unix epoch.
pub(crate) const ENQUEUED: &str = "Lanelog-Enqueued";
/// Header: not delivered before this time (ms).
pub(crate) const NOT_BEFORE: &str = "Lanelog-Not-Before";
/// Header: not delivered after this time (ms).
pub(crate) const DEADLINE: &str = "Lanelog-Deadline";
/// Dead-letter header: why it was parked.
pub(crate) const REASON: &str = "Lanelog-Reason";
/// Dead-letter header: deliveries it had.
pub(crate) const ATTEMPTS: &str = "Lanelog-Attempts";
/// Dead-letter header: when it was parked (ms).
pub(crate) const DEAD_AT: &str = "Lanelog-Dead-At";
/// Dead-letter subject header: the dead letter was redriven to this jobs
/// stream sequence (the subject's last message is then this marker).
pub(crate) const REDRIVEN: &str = "Lanelog-Redriven";
/// Key record header: the id the key's first enqueue returned.
pub(crate) const KEY_ID: &str = "Lanelog-Key-Id";

/// Longest queue prefix: stream names are limited, and every name
/// derives from the prefix.
pub(crate) const MAX_PREFIX_BYTES: usize = 64;

/// The names of one queue on a server.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Result<Names> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_BYTES
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "queue prefix {prefix:?} must be 1 to {MAX_PREFIX_BYTES} letters, digits, '_' or '-'"
            )));
        }
        Ok(Names {
            prefix: prefix.to_string(),
        })
    }

    pub(crate) fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.prefix)
    }
    pub(crate) fn dead_stream(&self) -> String {
        format!("{}_DEAD", self.prefix)
    }
    pub(crate) fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.prefix)
    }
    pub(crate) fn keys_stream(&self) -> String {
        format!("{}_KEYS", self.prefix)
    }
    pub(crate) fn band_subject(&self, band: u8) -> String {
        format!("{}.jobs.{band}", self.prefix)
    }
    pub(crate) fn jobs_subjects(&self) -> String {
        format!("{}.jobs.*", self.prefix)
    }
    pub(crate) fn band_consumer(&self, band: u8) -> String {
        format!("{}_band_{band}", self.prefix)
    }
    pub(crate) fn dead_subject(&self, id: u64) -> String {
        format!("{}.dead.{id}", self.prefix)
    }
    pub(crate) fn dead_subjects(&self) -> String {
        format!("{}.dead.*", self.prefix)
    }
    pub(crate) fn result_subject(&self, id: u64) -> String {
        format!("{}.results.{id}", self.prefix)
    }
    pub(crate) fn results_subjects(&self) -> String {
        format!("{}.results.*", self.prefix)
    }
    pub(crate) fn key_subject(&self, key: &[u8]) -> String {
        format!("{}.keys.{}", self.prefix, hex(key))
    }
    pub(crate) fn keys_subjects(&self) -> String {
        format!("{}.keys.*", self.prefix)
    }
    pub(crate) fn wake_subject(&self) -> String {
        format!("{}.wake", self.prefix)
    }
}

/// The `Nats-Msg-Id` of a keyed enqueue: the server drops a second publish
/// with the same id within the stream's duplicate window and acks it with
/// the first one's sequence.
pub(crate) fn dedup_id(key: &[u8]) -> String {
    format!("k-{}", hex(key))
}

/// Lowercase hex: keys are arbitrary bytes, subjects and header values are
/// not.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// A header value made safe: header values end at a line break, so
/// control characters become spaces.
pub(crate) fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A number header, `None` when absent or not a number (a message
/// published by someone else).
pub(crate) fn number(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// What the backend's headers say about a job message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobMeta {
    pub id: u64,
    pub priority: u8,
    pub enqueued_at: Timestamp,
    pub not_before: Option<u64>,
    pub deadline: Option<u64>,
}

impl JobMeta {
    /// Read from a job message stored at `sequence` on `subject`'s band.
    pub(crate) fn read(headers: Option<&HeaderMap>, sequence: u64, band: u8) -> JobMeta {
        JobMeta {
            id: number(headers, ID).unwrap_or(sequence),
            priority: number(headers, PRIORITY)
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(band),
            enqueued_at: Timestamp(number(headers, ENQUEUED).unwrap_or(0)),
            not_before: number(headers, NOT_BEFORE),
            deadline: number(headers, DEADLINE),
        }
    }

    /// The headers of a job message (the id only when it is not the
    /// sequence the server will give).
    pub(crate) fn write(&self, keep_id: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        if keep_id {
            h.insert(ID, self.id.to_string().as_str());
        }
        h.insert(PRIORITY, self.priority.to_string().as_str());
        h.insert(ENQUEUED, self.enqueued_at.0.to_string().as_str());
        if let Some(t) = self.not_before {
            h.insert(NOT_BEFORE, t.to_string().as_str());
        }
        if let Some(t) = self.deadline {
            h.insert(DEADLINE, t.to_string().as_str());
        }
        h
    }
}

/// The band of subject `P.jobs.B`.
pub(crate) fn band_of(subject: &str) -> Option<u8> {
    subject.rsplit('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert!(Names::new("lanelog-test_1").is_ok());
        assert!(Names::new("").is_err());
        assert!(Names::new("a.b").is_err());
        assert!(Names::new("a b").is_err());
        assert!(Names::new(&"x".repeat(MAX_PREFIX_BYTES + 1)).is_err());
    }

    #[test]
    fn meta_round_trips_through_headers() {
        let m = JobMeta {
            id: 42,
            priority: 7,
            enqueued_at: Timestamp(1_000),
            not_before: Some(2_000),
            deadline: Some(3_000),
        };
        assert_eq!(JobMeta::read(Some(&m.write(true)), 99, 0), m);
        // Without the id header the sequence is the id.
        assert_eq!(JobMeta::read(Some(&m.write(false)), 99, 0).id, 99);
        // A foreign message: its band is its priority.
        assert_eq!(JobMeta::read(None, 5, 3).priority, 3);
    }

    #[test]
    fn keys_become_subject_tokens() {
        assert_eq!(hex(b"a\n\xff"), "610aff");
        assert_eq!(header_text("line\r\nbreak"), "line  break");
        assert_eq!(band_of("p.jobs.17"), Some(17));
    }
}
