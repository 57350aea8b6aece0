//! Checkpoints: when one is due, and writing it. A checkpoint is the
//! durable state of every live message plus where the journal resumes, so
//! open reads it instead of replaying the journal from the beginning.
//!
//! Invariants:
//!
//! A. A checkpoint describes only durable files: the journal is rotated and
//!    everything dirty synced before the snapshot is taken (invariant D of
//!    `engine`).
//! B. It is written under a temporary name, synced, renamed into place and
//!    the directory synced before anything it supersedes (the previous
//!    checkpoint, journal files before the one it names) is removed.

use super::{Core, Inner, Target};
use crate::codec::checkpoint::{
    self, CheckpointBody, CheckpointKey, CheckpointMeta, CheckpointSegment,
};
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
    /// it covers.
    pub(super) fn checkpoint(&self, core: &mut Core) -> Result<()> {
        let now = self.opts.clock.now().0;
        // Invariant A: start a fresh journal file so replay starts at its
        // beginning, then sync everything the checkpoint will describe.
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
        self.sync_inline(core)?;
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
        let file = match self.storage.create(&tmp, bytes.len() as u64) {
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
        self.storage.sync_dir()?;
        core.checkpoint_number = number;
        core.checkpoint_head = active_id;
        // Every key and counter is in this checkpoint: their segments may go.
        core.unsaved_keys.clear();
        core.unsaved_cuts.clear();
        core.checkpoint_file_bytes = bytes.len() as u64;
        core.journal_bytes_since_checkpoint = 0;
        Ok(())
    }
}
