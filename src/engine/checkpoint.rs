//! Checkpoints: when one is due, and writing it. A checkpoint is the
//! durable state of every live message plus where the journal resumes, so
//! open reads it instead of replaying the journal from the beginning.
//!
//! Invariants:
//!
//! A. A checkpoint describes only durable files: everything dirty is synced
//!    before the snapshot is taken, and the journal file and the active
//!    segment it names are durable up to the positions it names (invariant
//!    D of `engine`). Recovery relies on this to sync nothing before those
//!    positions (invariant D of `recovery`).
//! B. It is written under a temporary name, synced, renamed into place and
//!    the directory synced before anything it supersedes (the previous
//!    checkpoint, journal files before the one it names) is removed. The
//!    removals themselves are not synced: a superseded file that a power
//!    loss brings back is superseded again, and open removes it (a later
//!    directory sync, of this queue or of open, makes them durable).
//! C. Replay resumes at the journal position the checkpoint names, which
//!    need not be the start of a file: a checkpoint taken by maintenance
//!    rotates the journal first, so that the file it names and no other is
//!    kept, while the one `close` takes does not (making a journal file
//!    costs syncs, and the next open resumes appending to that file).

use super::{Core, Inner, Target};
use crate::codec::checkpoint::{
    self, CheckpointBody, CheckpointKey, CheckpointMeta, CheckpointSegment,
};
use crate::codec::header;
use crate::error::Result;
use crate::layout::{self, CreateError};
use crate::prepare::Want;

impl Inner {
    /// Whether enough journal has been written since the last checkpoint
    /// (more than `checkpoint_bytes`, and more than the checkpoint itself,
    /// so a large queue is not rewritten for a little journal).
    pub(super) fn checkpoint_due(&self, core: &Core) -> bool {
        core.journal_bytes_since_checkpoint > self.opts.checkpoint_bytes
            && core.journal_bytes_since_checkpoint > core.checkpoint_file_bytes
    }

    /// Write a checkpoint of the durable state and drop the journal files
    /// it covers; with `rotate`, start a new journal file first (invariant
    /// C).
    pub(super) fn checkpoint(&self, core: &mut Core, rotate: bool) -> Result<()> {
        let now = self.opts.clock.now().0;
        if rotate {
            let next = Want::Journal(core.journal.number() + 1);
            let rotated = match &self.prep {
                Some(p) => p.take(next),
                None => Ok(None),
            }
            .and_then(|ahead| core.journal.rotate(&*self.storage, now, ahead));
            let old = match rotated {
                Ok(old) => old,
                // A full disk: no checkpoint now; the next maintenance tries again.
                Err(CreateError::NotMade(_)) => return Ok(()),
                Err(CreateError::Failed(e)) => return Err(e.into()),
            };
            let old_number = core.journal.number() - 1;
            core.mark_dirty(&old, Target::Journal(old_number), 0);
        }
        // Invariant A: sync everything the checkpoint will describe.
        self.sync_inline(core)?;
        self.sync_positions(core)?;
        let mut messages = Vec::with_capacity(core.index.live_count() as usize);
        core.index.snapshot(|m| messages.push(m));
        // Marks below every message a retention cut could remove (dead
        // letters are not cut) are dead weight: drop them, so they follow
        // live messages, not history, with or without retention.
        let lowest = messages
            .iter()
            .filter(|m| m.state != checkpoint::CheckpointState::Dead)
            .map(|m| m.id)
            .min()
            .unwrap_or(core.next_id);
        core.index.forget_marks_below(lowest);
        let number = core.checkpoint_number + 1;
        let totals = core.index.totals();
        // Keys past their window need not survive a reopen.
        let cutoff = now.saturating_sub(crate::clock::duration_ms(self.opts.dedup_window));
        core.index.forget_keys(cutoff);
        let active = &core.segments[&core.active];
        let active_id = active.id();
        let meta = CheckpointMeta {
            number,
            created_ms: now,
            next_id: core.reserved_until.max(core.next_id),
            journal_file: core.journal.number(),
            journal_offset: core.journal.end(),
            head_segment: u64::from(active.id()),
            head_offset: active.end(),
            acked_total: totals.acked,
            deadline_missed_total: totals.deadline_missed,
            expired_total: totals.expired,
            dead_expired_total: totals.dead_expired,
            version: crate::codec::FORMAT_VERSION,
        };
        let reasons: Vec<(u64, &str)> = core
            .index
            .dead_letters()
            .map(|(id, d)| (id, d.reason.as_str()))
            .collect();
        let segments: Vec<CheckpointSegment> = core
            .segments
            .values()
            .map(|s| CheckpointSegment {
                id: s.id(),
                records: s.records(),
                largest: s.largest(),
            })
            .collect();
        let keys: Vec<CheckpointKey<'_>> = core
            .index
            .keys()
            .iter()
            .map(|(id, at_ms, key)| CheckpointKey { id, at_ms, key })
            .collect();
        let marks: Vec<(u64, u64)> = core.index.marks().iter().collect();
        let body = CheckpointBody {
            segments: &segments,
            messages: &messages,
            reasons: &reasons,
            keys: &keys,
            marks: &marks,
        };
        let bytes = checkpoint::encode(&meta, &body);
        drop(keys);
        // Invariant B.
        let tmp = layout::checkpoint_temp_name(number);
        // Written whole and synced below, before the rename relies on it.
        let file = match self.storage.create_to_overwrite(&tmp, bytes.len() as u64) {
            Ok(file) => file,
            // Not made (a full disk): no checkpoint now, as when the journal
            // file could not be made; the next maintenance tries again.
            Err(_) => return Ok(()),
        };
        file.write_at(0, &bytes)?;
        file.sync_data()?;
        self.storage
            .rename(&tmp, &layout::checkpoint_name(number))?;
        self.storage.sync_dir()?;
        if core.checkpoint_number > 0 {
            self.storage
                .remove(&layout::checkpoint_name(core.checkpoint_number))?;
        }
        let current = core.journal.number();
        let covered: Vec<u64> = core
            .journal
            .files()
            .iter()
            .copied()
            .filter(|&n| n < current)
            .collect();
        for n in covered {
            self.storage.remove(&layout::journal_name(n))?;
        }
        core.journal.forget_files_before(current);
        // No directory sync for the removals (invariant B).
        core.checkpoint_number = number;
        core.checkpoint_head = active_id;
        core.checkpointed = Some(meta.position());
        // Every key and counter is in this checkpoint: their segments may go.
        core.unsaved_keys.clear();
        core.unsaved_cuts.clear();
        core.checkpoint_file_bytes = bytes.len() as u64;
        core.journal_bytes_since_checkpoint = 0;
        Ok(())
    }

    /// Make the journal file and the active segment durable up to their
    /// ends, the positions a checkpoint names (invariant A). After
    /// `sync_inline` they are, unless a sync led by another thread took
    /// them off the dirty list and has not finished (a `sync` racing
    /// `close`): `synced` moves only once a sync completed, so this syncs
    /// exactly when that may be so, and costs nothing otherwise.
    fn sync_positions(&self, core: &mut Core) -> Result<()> {
        let end = core.journal.end();
        if core.journal.synced() < end {
            core.journal.file().sync_data()?;
            core.journal.mark_synced(end);
        }
        let seg = core.active();
        let end = seg.end();
        if seg.synced() < end {
            seg.file().sync_data()?;
            seg.mark_synced(end);
        }
        Ok(())
    }

    /// Whether the queue changed since the newest checkpoint, by what it
    /// wrote: a journal or segment position other than the one the
    /// checkpoint names, a journal file the checkpoint does not supersede,
    /// or segments holding what no checkpoint holds (`close` checkpoints
    /// only then). What changes without a write (leases released and keys
    /// forgotten at open, delays maturing) open recomputes again from the
    /// same checkpoint, and every byte up to its positions is durable
    /// (invariant A), so a queue that did not change needs no new one.
    pub(super) fn changed_since_checkpoint(&self, core: &Core) -> bool {
        let active = &core.segments[&core.active];
        let now = Position {
            journal: (core.journal.number(), core.journal.end()),
            head: (core.active, active.end()),
        };
        let written = match core.checkpointed {
            Some(at) => at != now,
            // No checkpoint yet: anything past the headers.
            None => {
                core.journal.end() as usize > header::SIZE || active.end() as usize > header::SIZE
            }
        };
        written
            || core.journal.files().len() > 1
            || !core.unsaved_keys.is_empty()
            || !core.unsaved_cuts.is_empty()
    }
}

/// Where a checkpoint says replay resumes: the journal file and offset, and
/// the head segment and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub journal: (u64, u32),
    pub head: (u32, u32),
}

impl CheckpointMeta {
    /// The position this checkpoint names.
    pub(crate) fn position(&self) -> Position {
        Position {
            journal: (self.journal_file, self.journal_offset),
            head: (
                self.head_segment.min(u64::from(u32::MAX)) as u32,
                self.head_offset,
            ),
        }
    }
}
