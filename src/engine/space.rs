//! Space: deleting segments whose messages are all finished, and
//! relocating the few live records of a mostly finished segment so it can
//! be deleted too. Which segment to relocate is a pure choice
//! ([`choose_relocation`]); carrying it out copies, syncs and deletes.
//!
//! Invariants:
//!
//! A. A drained segment is deleted only once the journal entries that
//!    finished its last message are durable (invariant D of `engine`).
//! B. A relocated copy is durable before its original is deleted, and the
//!    index points at the copy from the moment it is written.
//! C. The active segment is never deleted or relocated.
//! D. A segment holding idempotency keys that no checkpoint holds is
//!    deleted only after a checkpoint: recovery finds keys in the
//!    checkpoint and in the segments it scans, so a key in a deleted,
//!    uncheckpointed segment would be forgotten before its window ends.
//!    The same holds for a segment a retention cut removed records from
//!    that no checkpoint holds: replay counts a cut over the records it
//!    finds, so the lifetime counters would go down; but on a full disk,
//!    where no checkpoint can be written, such a segment is deleted all
//!    the same (space before counters).

use std::collections::HashSet;

use super::{Core, Inner, Target};
use crate::codec::header;
use crate::codec::record::{self, RecordHeader};
use crate::error::Result;
use crate::index::Loc;
use crate::layout::{self, CreateError};
use crate::segment::{self, Segment};

/// How full of live records a sealed segment is, for [`choose_relocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentUse {
    pub id: u32,
    /// Records appended over its life.
    pub records: u32,
    /// Of those, still live.
    pub live: u64,
}

/// The segment to relocate next, if any: the oldest sealed segment (below
/// `active`) with live records, at most a quarter of its records live,
/// not known to hold unreadable records (`unmovable`), and holding no
/// lane's next message (`heads`: consumers are about to finish those
/// anyway).
pub(super) fn choose_relocation(
    segments: impl IntoIterator<Item = SegmentUse>,
    active: u32,
    unmovable: &HashSet<u32>,
    heads: &[u32],
) -> Option<u32> {
    segments
        .into_iter()
        .find(|s| {
            s.id < active
                && !unmovable.contains(&s.id)
                && s.live > 0
                && s.live * 4 <= u64::from(s.records)
                && !heads.contains(&s.id)
        })
        .map(|s| s.id)
}

impl Inner {
    /// Delete segments whose end is durable; relocate one; checkpoint when
    /// due. Runs under the core lock after a sync; a failure poisons (the
    /// caller does it).
    pub(super) fn maintain(&self, core: &mut Core) -> Result<()> {
        core.maintenance_due = false;
        let durable = core.durable_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            core.drained.drain(..).partition(|&(_, seq)| seq <= durable);
        core.drained = waiting;
        if !core.drained.is_empty() {
            core.maintenance_due = true;
        }
        let mut removed = false;
        for (id, seq) in ready {
            if id == core.active || core.index.live_in(id) > 0 {
                continue;
            }
            if !self.saved(core, id)? {
                core.drained.push((id, seq));
                core.maintenance_due = true;
                continue;
            }
            if core.segments.remove(&id).is_some() {
                self.storage.remove(&layout::segment_name(id))?;
                removed = true;
            }
        }
        if removed {
            self.storage.sync_dir()?;
        }
        if self.relocate_one(core)? {
            // One segment per pass bounds the pause; look again next sync.
            core.maintenance_due = true;
        }
        if self.checkpoint_due(core) {
            self.checkpoint(core, true)?;
        }
        Ok(())
    }

    /// Relocate the segment [`choose_relocation`] picks, so that dead
    /// letters, long delays and starved lanes pin at most one old segment
    /// each. Returns whether a segment was reclaimed.
    fn relocate_one(&self, core: &mut Core) -> Result<bool> {
        let heads = core.index.lane_head_segments();
        let uses = core.segments.values().map(|s| SegmentUse {
            id: s.id(),
            records: s.records(),
            live: core.index.live_in(s.id()),
        });
        let Some(from) = choose_relocation(uses, core.active, &core.unmovable, &heads) else {
            return Ok(false);
        };
        let (file, size, end, seed) = {
            let s = &core.segments[&from];
            (s.file().clone(), s.size(), s.end(), s.seed())
        };
        let bytes = crate::storage::read_all(&*file)?;
        let bytes = &bytes[..end as usize];
        let scan = segment::scan(bytes, header::SIZE, size as usize, seed);
        let now = self.opts.clock.now().0;
        for (offset, h) in scan.frames {
            let here = Loc {
                segment: from,
                offset,
            };
            if core.index.locate(h.id, h.priority, h.result()) != Some(here) {
                continue;
            }
            // The scan decoded this record whole, so this cannot fail.
            let at = &bytes[offset as usize..];
            let Ok((_, key, payload)) = record::decode_with_key(at, size as usize, seed) else {
                continue;
            };
            let len = h.frame_len();
            if (core.active().room() as usize) < len {
                let id = core.active + 1;
                if let std::collections::btree_map::Entry::Vacant(slot) = core.segments.entry(id) {
                    let size = self.opts.segment_size as u32;
                    match Segment::create(&*self.storage, id, size, now) {
                        Ok(seg) => {
                            slot.insert(seg);
                        }
                        // A full disk: what was copied stays valid; try later.
                        Err(CreateError::NotMade(_)) => return Ok(false),
                        Err(CreateError::Failed(e)) => return Err(e.into()),
                    }
                }
                core.rotate_segment();
            }
            let active = core.active();
            // The copy keeps everything but the batch flag and the synced
            // end (a result stays a result).
            let copy = RecordHeader {
                synced_end: active.synced(),
                flags: record::FLAG_RELOCATED | (h.flags & record::FLAG_RESULT),
                ..h
            };
            let mut buf = Vec::with_capacity(len);
            record::encode_with_key(&copy, key, payload, active.seed(), &mut buf);
            let at = active.append(&buf, 1, h.len)?;
            let (seg_id, file, end) = (active.id(), active.file().clone(), active.end());
            core.mark_dirty(&file, Target::Segment(seg_id), end);
            core.index.relocate(
                h.id,
                h.priority,
                Loc {
                    segment: seg_id,
                    offset: at,
                },
                h.result(),
            );
        }
        // Invariant B: the copies are durable before the original goes.
        self.sync_inline(core)?;
        if core.index.live_in(from) > 0 {
            // A live record that cannot be read (damage) keeps the segment;
            // do not try it again in this process.
            core.unmovable.insert(from);
            return Ok(false);
        }
        if !self.saved(core, from)? {
            // Everything was copied; the next drained pass deletes it.
            core.drained.push((from, core.write_seq));
            core.maintenance_due = true;
            return Ok(false);
        }
        if core.segments.remove(&from).is_some() {
            self.storage.remove(&layout::segment_name(from))?;
            self.storage.sync_dir()?;
        }
        Ok(true)
    }

    /// Whether segment `id` may be deleted without forgetting what replay
    /// needs from it (invariant D): a segment holding keys or cut records
    /// no checkpoint holds yet gets a checkpoint first. When none could be
    /// written (a full disk), one holding keys is kept for a later pass
    /// (`false`), but one holding only cut records goes: freeing space
    /// comes first, and only a crash before the next checkpoint could then
    /// count those removals lower.
    fn saved(&self, core: &mut Core, id: u32) -> Result<bool> {
        if core.unsaved_keys.contains(&id) || core.unsaved_cuts.contains(&id) {
            self.checkpoint(core, true)?;
        }
        if core.unsaved_keys.contains(&id) {
            return Ok(false);
        }
        core.unsaved_cuts.remove(&id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u32, records: u32, live: u64) -> SegmentUse {
        SegmentUse { id, records, live }
    }

    #[test]
    fn picks_the_oldest_sealed_segment_at_most_a_quarter_live() {
        let none = HashSet::new();
        let segments = [seg(1, 100, 26), seg(2, 100, 25), seg(3, 100, 1)];
        assert_eq!(choose_relocation(segments, 9, &none, &[]), Some(2));
    }

    #[test]
    fn skips_finished_active_unmovable_and_lane_head_segments() {
        // Nothing live: deletion handles it, not relocation.
        let none = HashSet::new();
        assert_eq!(choose_relocation([seg(1, 100, 0)], 9, &none, &[]), None);
        // The active segment and anything after it stay.
        assert_eq!(choose_relocation([seg(9, 100, 1)], 9, &none, &[]), None);
        // Unreadable records found before: not tried again.
        let unmovable: HashSet<u32> = [1].into();
        assert_eq!(
            choose_relocation([seg(1, 100, 1), seg(2, 100, 1)], 9, &unmovable, &[]),
            Some(2)
        );
        // A lane's next message: consumers finish it soon.
        assert_eq!(
            choose_relocation([seg(1, 100, 1), seg(2, 100, 1)], 9, &none, &[1, 2]),
            None
        );
    }

    #[test]
    fn a_segment_with_more_than_a_quarter_live_stays() {
        let none = HashSet::new();
        assert_eq!(choose_relocation([seg(1, 7, 2)], 9, &none, &[]), None);
        assert_eq!(choose_relocation([seg(1, 8, 2)], 9, &none, &[]), Some(1));
    }
}
