//! [`Inspector::explain`]: everything the directory tells about one
//! message, and the lookups it needs (its record where the index points, or
//! every record of it in the segments; its checkpoint entry; its journal
//! entries).
//!
//! Invariants:
//!
//! A. Only the inspector's snapshot is read (the pinned files listed when
//!    it opened), through the same scanners and decoders open uses; a file
//!    its owner removed since is as if it held nothing.
//! B. The state comes from the index when the message is live (and from
//!    the scan when it is live in a missing segment). Otherwise
//!    the newest ack or purge entry says it finished; with neither, entries
//!    still on disk or a damaged record mean it is lost (a checkpoint trims
//!    a message's entries only together with the one that finished it), a
//!    record or checkpoint entry alone means it finished, and no trace at
//!    all is [`Error::Unknown`].
//! C. Journal entries that are about no message (id reservations) never
//!    become events. A retention cut names no message but an id bound; it
//!    is an event of a message below the bound only when it removed it:
//!    the message was neither finished nor a dead letter when the cut ran
//!    (as far as the entries before it and the newest checkpoint tell),
//!    and no earlier cut removed it.
//! D. The expiry time is the one the queue's own timer acts on: for a
//!    message or result, the retention mark covering its id plus the
//!    stored retention; for a dead letter, the time it became one plus the
//!    stored dead-letter retention.

use std::time::Duration;

use super::{
    len32, read_if_present, CheckpointInfo, CheckpointState, Event, EventKind, History, Inspector,
    MessageState, RecordInfo,
};
use crate::clock::{duration_ms, Timestamp};
use crate::codec::{checkpoint, entry, header, record};
use crate::error::{Error, Result};
use crate::index::Found;
use crate::message::MessageId;
use crate::{layout, segment};

impl Inspector {
    /// A message's whole history: its record, its entry in the newest
    /// checkpoint, and every journal entry about it still on disk. Entries
    /// older than the newest checkpoint may have been removed with their
    /// journal files ([`History::is_complete`] tells).
    ///
    /// Reads the journal files, and for a message that is no longer live
    /// every segment, so it costs a pass over those files.
    ///
    /// # Errors
    /// [`Error::Unknown`] when the directory holds no trace of `id`; as
    /// [`Inspector::recovery_report`]; [`Error::Io`].
    pub fn explain(&self, id: MessageId) -> Result<History> {
        let s = self.scanned()?;
        let id = id.0;
        let files = layout::Files::from_names(self.snapshot.names.iter().cloned());
        let found = s.index.find(id);
        let mut state = match found {
            Some(Found::Ready {
                priority, attempt, ..
            }) => Some(MessageState::Ready {
                priority,
                attempts: attempt,
            }),
            Some(Found::Delayed {
                priority,
                attempt,
                ready_at,
                ..
            }) => Some(MessageState::Delayed {
                priority,
                attempts: attempt,
                until: Timestamp(ready_at),
            }),
            Some(Found::InFlight(l)) => Some(MessageState::InFlight {
                priority: l.priority,
                attempt: l.attempt,
                lease_deadline: Timestamp(l.deadline),
            }),
            Some(Found::Dead(d)) => Some(MessageState::Dead {
                priority: d.priority,
                attempts: d.attempt,
                reason: d.reason.clone(),
                since: Timestamp(d.at),
            }),
            Some(Found::Completed(c)) => {
                let size = s
                    .segments
                    .get(&c.loc.segment)
                    .and_then(|seg| {
                        segment::read_header(&**seg.file(), c.loc.offset, seg.size() as usize)
                    })
                    .map_or(0, |h| h.len);
                Some(MessageState::Completed {
                    priority: c.priority,
                    attempts: c.attempt,
                    at: Timestamp(c.at),
                    result_size: size,
                })
            }
            None => s
                .missing
                .iter()
                .find(|&&(m, _)| m == id)
                .map(|&(_, segment)| MessageState::Lost {
                    segment: Some(segment),
                }),
        };
        let current = match found {
            Some(Found::Ready { loc, .. } | Found::Delayed { loc, .. }) => Some(loc),
            Some(Found::InFlight(l)) => Some(l.loc),
            Some(Found::Dead(d)) => Some(d.loc),
            // The message's own record is finished; the scan finds it and
            // the result record.
            Some(Found::Completed(_)) | None => None,
        };
        let mut records = match current {
            Some(loc) => s
                .segments
                .get(&loc.segment)
                .map(|seg| self.record_at(seg, loc.offset))
                .transpose()?
                .into_iter()
                .collect(),
            None => self.find_records(&files.segments, id)?,
        };
        if let Some(Found::Completed(c)) = found {
            for r in &mut records {
                r.current = r.result
                    && r.file == crate::layout::segment_name(c.loc.segment)
                    && r.offset == c.loc.offset;
            }
        }
        let (checkpoint, meta) = match s.report.checkpoint {
            Some(n) => self.checkpoint_entry(n, id)?,
            None => (None, None),
        };
        // Whether the message was live (not finished, not dead) where
        // replay resumes after the newest checkpoint.
        let resume = meta.map(|m| Resume {
            file: m.journal_file,
            offset: m.journal_offset,
            live: match &checkpoint {
                Some(c) => c.state != CheckpointState::Dead,
                // Enqueued after the checkpoint, or finished before it.
                None => id >= m.next_id,
            },
        });
        let events = self.events(&files.journals, id, resume)?;
        if let Some(MessageState::Completed { attempts, .. }) = &mut state {
            // Replay applies a result record before the deliveries the
            // journal holds (which then find nothing), so the index may
            // count fewer than the entries tell.
            let delivered = events
                .iter()
                .filter(|e| e.kind == EventKind::Delivered)
                .map(|e| e.attempt);
            *attempts = delivered.fold(*attempts, u32::max);
        }
        if state.is_none() {
            state = events.iter().rev().find_map(|e| match e.kind {
                EventKind::Acked => Some(MessageState::Acked),
                EventKind::Purged => Some(MessageState::Purged),
                EventKind::RetentionExpired | EventKind::DeadExpired => Some(MessageState::Expired),
                _ => None,
            });
        }
        // Not live and nothing finished it: entries about it (which a
        // checkpoint trims only together with the one that finished it) or
        // a damaged record mean it was lost, not finished.
        let unreadable = records.iter().any(|r| r.damage.is_some());
        let state = match state {
            Some(state) => state,
            None if unreadable || !events.is_empty() => MessageState::Lost { segment: None },
            None if !records.is_empty() || checkpoint.is_some() => MessageState::Finished,
            None => return Err(Error::Unknown),
        };
        let expires_at = self.expires_at(id, &state, &records)?;
        Ok(History {
            id: MessageId(id),
            state,
            records,
            checkpoint,
            events,
            first_journal_file: files.journals.first().copied(),
            expires_at,
        })
    }

    /// When the queue's timer removes the message (invariant D); `None`
    /// when no retention applies to it.
    fn expires_at(
        &self,
        id: u64,
        state: &MessageState,
        records: &[RecordInfo],
    ) -> Result<Option<Timestamp>> {
        let Some(a) = self.attributes()? else {
            return Ok(None);
        };
        let after = |at: u64, d: Duration| Timestamp(at.saturating_add(duration_ms(d)));
        Ok(match state {
            MessageState::Dead { since, .. } => a.dead_letter_retention.map(|r| after(since.0, r)),
            MessageState::Ready { .. }
            | MessageState::Delayed { .. }
            | MessageState::InFlight { .. }
            | MessageState::Completed { .. } => {
                let Some(r) = a.retention else {
                    return Ok(None);
                };
                let s = self.scanned()?;
                // The first mark covering the id: its time passes the
                // cutoff no earlier than the message's enqueue does.
                let mark = s.index.marks().iter().find(|&(end, _)| end > id);
                let enqueued = records
                    .iter()
                    .find(|r| !r.result && r.damage.is_none())
                    .map(|r| r.enqueued_at.0);
                mark.map(|(_, at)| at).or(enqueued).map(|at| after(at, r))
            }
            _ => None,
        })
    }

    fn record_at(&self, seg: &segment::Segment, offset: u32) -> Result<RecordInfo> {
        let (segment_id, file) = (seg.id(), &**seg.file());
        let max = self.limit(seg.size());
        match segment::read_record(file, offset, max, seg.seed()) {
            Ok(r) => Ok(RecordInfo::new(
                segment_id,
                offset,
                Some(&r.header),
                &r.key,
                true,
                None,
            )),
            Err(segment::ReadError::Io(e)) => Err(e.into()),
            Err(segment::ReadError::Corrupt(e)) => Ok(RecordInfo::new(
                segment_id,
                offset,
                segment::read_header(file, offset, max).as_ref(),
                &[],
                true,
                Some(format!("{e}; the queue dead-letters it when it comes up")),
            )),
        }
    }

    /// Every record of `id` in the segments on disk (it is not live).
    fn find_records(&self, segments: &[u32], id: u64) -> Result<Vec<RecordInfo>> {
        let mut out = Vec::new();
        for &seg in segments {
            let name = crate::layout::segment_name(seg);
            let Some(bytes) = read_if_present(&*self.snapshot.files, &name, &mut |_| {})? else {
                continue;
            };
            if bytes.len() < header::SIZE {
                continue;
            }
            let max = self.limit(len32(&bytes));
            let seed = segment::seed_of(&bytes, seg);
            let scan = segment::scan(&bytes, header::SIZE, max, seed);
            // A damaged record whose unverified header names the message.
            for gap in &scan.damaged {
                let at = gap.start as usize;
                let Some(h) = record::decode_header(&bytes[at..], max)
                    .ok()
                    .filter(|h| h.id == id)
                else {
                    continue;
                };
                let why = record::decode(&bytes[at..], max, seed)
                    .err()
                    .map_or("out of id order".to_string(), |e| e.to_string());
                out.push(RecordInfo::new(
                    seg,
                    gap.start,
                    Some(&h),
                    &[],
                    false,
                    Some(format!("{why}; open skips it")),
                ));
            }
            for (offset, h) in scan.frames.iter().filter(|(_, h)| h.id == id) {
                let at = *offset as usize;
                let r = h.key_range();
                let key = &bytes[at + r.start..at + r.end];
                out.push(RecordInfo::new(seg, *offset, Some(h), key, false, None));
            }
        }
        out.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
        Ok(out)
    }

    /// The message's entry in checkpoint `number`, and the checkpoint's
    /// fields.
    fn checkpoint_entry(
        &self,
        number: u64,
        id: u64,
    ) -> Result<(Option<CheckpointInfo>, Option<checkpoint::CheckpointMeta>)> {
        let name = crate::layout::checkpoint_name(number);
        let Some(bytes) = read_if_present(&*self.snapshot.files, &name, &mut |_| {})? else {
            return Ok((None, None));
        };
        // Decoded when the directory was scanned; a checkpoint replaced since
        // then simply holds nothing here.
        let mut sink = FindInCheckpoint {
            id,
            found: None,
            reason: None,
        };
        let meta = checkpoint::decode(&bytes, &mut sink).ok();
        let info = sink.found.map(|m| CheckpointInfo {
            number,
            state: CheckpointState::from_codec(m.state),
            time: Timestamp(m.time_ms),
            deadline: (m.deadline_ms > 0).then_some(Timestamp(m.deadline_ms)),
            attempts: m.attempt,
            priority: m.priority,
            reason: sink.reason,
        });
        Ok((info, meta))
    }

    /// Every journal entry about message `id`, in journal order (see
    /// invariant C for retention cuts).
    fn events(&self, journals: &[u64], id: u64, resume: Option<Resume>) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        // Whether a retention cut would remove the message now: it is not
        // finished, not a dead letter, not cut already.
        let mut live = true;
        let mut resumed = resume.is_none();
        for &n in journals {
            let name = crate::layout::journal_name(n);
            let Some(bytes) = read_if_present(&*self.snapshot.files, &name, &mut |_| {})? else {
                continue;
            };
            let Ok(h) = header::FileHeader::decode(header::FileKind::Journal, &bytes) else {
                continue;
            };
            let scan = crate::journal::scan(&bytes, header::SIZE, h.version, n);
            for (offset, (entries, _)) in &scan.frames {
                if let Some(r) = resume.filter(|r| !resumed && (n, *offset) >= (r.file, r.offset)) {
                    live = r.live;
                    resumed = true;
                }
                for e in entries {
                    // A retention cut names the first id it keeps.
                    let about = if e.kind == entry::Kind::RetentionCut {
                        id < e.id && std::mem::take(&mut live)
                    } else {
                        e.kind.names_message() && e.id == id
                    };
                    if !about {
                        continue;
                    }
                    match e.kind {
                        entry::Kind::Acked
                        | entry::Kind::Purged
                        | entry::Kind::DeadExpired
                        | entry::Kind::DeadLettered
                        | entry::Kind::DeadlineMissed => live = false,
                        entry::Kind::Redriven => live = true,
                        _ => {}
                    }
                    if let Some(kind) = EventKind::from_codec(e.kind) {
                        out.push(Event {
                            file: name.clone(),
                            offset: *offset,
                            kind,
                            time: Timestamp(e.time_ms),
                            attempt: e.attempt,
                            reason: e.reason.clone(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Where replay resumes after the newest checkpoint, and whether the
/// message was live there (see `Inspector::events`).
#[derive(Debug, Clone, Copy)]
struct Resume {
    file: u64,
    offset: u32,
    live: bool,
}

/// Keeps one message's checkpoint entry and reason.
struct FindInCheckpoint {
    id: u64,
    found: Option<checkpoint::CheckpointMessage>,
    reason: Option<String>,
}

impl checkpoint::CheckpointSink for FindInCheckpoint {
    fn segment(&mut self, _: checkpoint::CheckpointSegment) {}
    fn message(&mut self, m: checkpoint::CheckpointMessage) {
        if m.id == self.id {
            self.found = Some(m);
        }
    }
    fn reason(&mut self, id: u64, reason: String) {
        if id == self.id {
            self.reason = Some(reason);
        }
    }
    fn key(&mut self, _: checkpoint::CheckpointKey<'_>) {}
    fn mark(&mut self, _: u64, _: u64) {}
}

impl RecordInfo {
    /// What a record's header (when readable) and key tell.
    fn new(
        segment: u32,
        offset: u32,
        h: Option<&record::RecordHeader>,
        key: &[u8],
        current: bool,
        damage: Option<String>,
    ) -> RecordInfo {
        RecordInfo {
            file: crate::layout::segment_name(segment),
            offset,
            enqueued_at: Timestamp(h.map_or(0, |h| h.enqueued_ms)),
            priority: h.map_or(0, |h| h.priority),
            delay: Duration::from_millis(h.map_or(0, |h| u64::from(h.delay_ms))),
            size: h.map_or(0, |h| h.len),
            // 1 = "has one" from a header read alone (its value unread);
            // no real deadline is that old, as enqueue refuses past ones.
            deadline: h
                .filter(|h| h.deadline_ms > 1)
                .map(|h| Timestamp(h.deadline_ms)),
            key: (!key.is_empty()).then(|| String::from_utf8_lossy(key).into_owned()),
            result: h.is_some_and(|h| h.result()),
            relocated: h.is_some_and(|h| h.relocated()),
            current,
            damage,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{inspect, queue, START};
    use super::super::*;
    use crate::clock::ManualClock;
    use crate::storage::MemoryStorage;

    #[test]
    fn explain_tells_every_step_and_when_history_was_trimmed() {
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = queue(&mem, &clock);
        let id = q.enqueue(b"job", 3).expect("enqueue");
        let d = q.dequeue().expect("dequeue").expect("one");
        q.nack(d.receipt, Duration::ZERO).expect("nack");
        let _lost = q.dequeue().expect("dequeue").expect("again");
        clock.advance(Duration::from_secs(31));
        let d = q.dequeue().expect("dequeue").expect("after expiry");
        assert_eq!(d.attempt, 3);
        let ins = inspect(&mem, &clock);
        let h = ins.explain(id).expect("explain");
        assert!(matches!(
            h.state,
            MessageState::InFlight {
                priority: 3,
                attempt: 3,
                ..
            }
        ));
        q.ack(d.receipt).expect("ack");
        let h = inspect(&mem, &clock).explain(id).expect("explain");
        let names: Vec<&str> = h.events.iter().map(Event::name).collect();
        assert_eq!(
            names,
            [
                "delivered",
                "nacked",
                "delivered",
                "expired",
                "delivered",
                "acked"
            ]
        );
        assert_eq!(
            h.events.iter().map(|e| e.attempt).collect::<Vec<_>>(),
            [1, 1, 2, 2, 3, 3]
        );
        assert_eq!(h.events[0].time, START.plus(Duration::from_secs(30)));
        assert_eq!(h.state, MessageState::Acked);
        assert_eq!(h.records.len(), 1);
        assert_eq!(h.records[0].enqueued_at, START);
        assert_eq!(h.records[0].size, 3);
        assert!(h.is_complete());
        assert!(matches!(
            inspect(&mem, &clock).explain(MessageId(999)),
            Err(Error::Unknown)
        ));

        // A close writes a checkpoint at the journal's end, and keeps the
        // file it names: nothing is trimmed yet.
        let other = q.enqueue(b"kept", 1).expect("enqueue");
        q.close().expect("close");
        let h = inspect(&mem, &clock).explain(id).expect("explain");
        assert!(h.is_complete());
        assert_eq!(h.events.len(), 6);
        // Once the journal moves to a new file, the next checkpoint drops the
        // files before it.
        let q = queue(&mem, &clock);
        let reason = "r".repeat(1000);
        for _ in 0..70 {
            q.enqueue(b"filler", 9).expect("enqueue");
            let d = q.dequeue().expect("dequeue").expect("filler");
            q.dead_letter(d.receipt, &reason).expect("dead letter");
        }
        q.close().expect("close");
        let h = inspect(&mem, &clock).explain(other).expect("explain");
        assert!(!h.is_complete());
        assert!(h.events.is_empty());
        let c = h.checkpoint.expect("in the checkpoint");
        assert_eq!(c.state, CheckpointState::Pending);
        assert_eq!(
            h.state,
            MessageState::Ready {
                priority: 1,
                attempts: 0
            }
        );
    }

    /// Wait for the queue's background tender to act on the clock.
    fn eventually(q: &crate::Queue, pred: impl Fn(&crate::Stats) -> bool) {
        let start = std::time::Instant::now();
        while !pred(&q.stats()) {
            assert!(start.elapsed() < Duration::from_secs(20), "{:?}", q.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn explain_tells_results_deadlines_keys_and_what_retention_removed() {
        const HOUR: Duration = Duration::from_secs(3600);
        let mem = MemoryStorage::new();
        let clock = ManualClock::new(START);
        let q = QueueOptions::new()
            .segment_size(1 << 20)
            .journal_file_size(64 << 10)
            .max_deliveries(0)
            .retention(HOUR)
            .dead_letter_retention(2 * HOUR)
            .clock(std::sync::Arc::new(clock.clone()))
            .open_storage(std::sync::Arc::new(mem.clone()))
            .expect("open");
        let acked = q.enqueue(b"acked", 9).expect("enqueue");
        let done = q.enqueue(b"done", 8).expect("enqueue");
        let dead = q.enqueue(b"dead", 7).expect("enqueue");
        let keyed = q
            .enqueue_with(
                b"keyed",
                &crate::EnqueueOptions::new()
                    .priority(1)
                    .deadline(START.plus(HOUR / 2))
                    .key("k-1"),
            )
            .expect("keyed");
        let d = q.dequeue().expect("dequeue").expect("acked");
        q.ack(d.receipt).expect("ack");
        let d = q.dequeue().expect("dequeue").expect("done");
        q.complete(d.receipt, b"res").expect("complete");
        let d = q.dequeue().expect("dequeue").expect("dead");
        clock.advance(Duration::from_secs(5));
        q.dead_letter(d.receipt, "bad").expect("dead letter");

        let ins = inspect(&mem, &clock);
        let h = ins.explain(done).expect("explain");
        assert_eq!(
            h.state,
            MessageState::Completed {
                priority: 8,
                attempts: 1,
                at: START,
                result_size: 3
            }
        );
        let results: Vec<&RecordInfo> = h.records.iter().filter(|r| r.result).collect();
        assert_eq!((h.records.len(), results.len()), (2, 1));
        assert!(results[0].current && results[0].size == 3);
        assert_eq!(h.expires_at, Some(START.plus(HOUR)));
        let h = ins.explain(dead).expect("explain");
        assert_eq!(
            h.expires_at,
            Some(START.plus(Duration::from_secs(5)).plus(2 * HOUR))
        );
        let h = ins.explain(keyed).expect("explain");
        assert_eq!(h.records[0].key.as_deref(), Some("k-1"));
        assert_eq!(h.records[0].deadline, Some(START.plus(HOUR / 2)));
        assert_eq!(h.expires_at, Some(START.plus(HOUR)));

        // The keyed message misses its deadline; then retention takes it
        // and the result, but neither the acked message nor the dead
        // letter (which has its own retention).
        clock.advance(HOUR / 2);
        eventually(&q, |s| s.deadline_missed_total == 1);
        let h = inspect(&mem, &clock).explain(keyed).expect("explain");
        assert!(
            matches!(h.state, MessageState::Dead { ref reason, .. } if reason == "deadline missed")
        );
        assert_eq!(
            h.events.last().map(|e| e.kind),
            Some(EventKind::DeadlineMissed)
        );
        clock.advance(HOUR / 2 + HOUR / 32);
        eventually(&q, |s| s.expired_total == 1);
        let ins = inspect(&mem, &clock);
        let kinds = |id| -> Vec<EventKind> {
            ins.explain(id)
                .expect("explain")
                .events
                .iter()
                .map(|e| e.kind)
                .collect()
        };
        assert_eq!(kinds(acked), [EventKind::Delivered, EventKind::Acked]);
        assert_eq!(
            ins.explain(acked).expect("explain").state,
            MessageState::Acked
        );
        assert_eq!(
            kinds(done),
            [EventKind::Delivered, EventKind::RetentionExpired]
        );
        let h = ins.explain(done).expect("explain");
        assert_eq!((h.state, h.expires_at), (MessageState::Expired, None));
        assert_eq!(kinds(dead), [EventKind::Delivered, EventKind::DeadLettered]);
        assert!(matches!(
            ins.explain(dead).expect("explain").state,
            MessageState::Dead { .. }
        ));
        assert_eq!(kinds(keyed), [EventKind::DeadlineMissed]);
        clock.advance(2 * HOUR);
        eventually(&q, |s| s.dead_expired_total == 2);
        let ins = inspect(&mem, &clock);
        let h = ins.explain(dead).expect("explain");
        assert_eq!(h.state, MessageState::Expired);
        assert_eq!(
            h.events.last().map(|e| e.kind),
            Some(EventKind::DeadExpired)
        );
        assert!(ins.verify(|_, _| {}).expect("verify").is_clean());
    }
}
