//! Finding the true end of a preallocated file, and telling a torn tail from
//! damage.
//!
//! Segments and journal files are preallocated with zeros and frames are
//! appended, so the data ends where the first frame fails to decode. After a
//! power loss the bytes past the last sync may be any mix of old zeros, whole
//! frames and torn frames; after media damage a frame in the middle may be
//! bad while later ones are good. Every frame stores the offset up to which a
//! completed sync had made its file durable when it was written (its
//! `synced end`). The rule:
//!
//! - Collect every frame that decodes, skipping over bad bytes to the next
//!   frame that decodes (resynchronising on the magic).
//! - Let D be the largest `synced end` any frame claims. A bad region that
//!   starts below D lay inside a completed sync: it is **damage**; it is
//!   reported and skipped, and the frames after it are kept.
//! - The first bad region at or above D was never known durable: it is a
//!   **torn tail**. The file is cut there; frames after it were not durable
//!   either and are dropped (keeping them would leave holes).
//!
//! Invariant: a frame that was durable when some later frame was written is
//! never dropped, whatever happened to the bytes between them.

use std::ops::Range;

use super::DecodeError;

/// A frame that knows its file's durable offset at the time it was written.
pub trait Frame {
    /// The frame's `synced end` field.
    fn synced_end(&self) -> u32;
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<F> {
    /// Frames kept, with their offsets, in file order.
    pub frames: Vec<(u32, F)>,
    /// Where the next frame goes: the end of the last kept frame.
    pub end: u32,
    /// Bad regions inside durable data, skipped and reported.
    pub damaged: Vec<Range<u32>>,
    /// Non-zero bytes from `end` on that are cut off (torn or never durable).
    pub torn: Option<Range<u32>>,
    /// Whole frames found after the cut and dropped with it.
    pub dropped_frames: usize,
}

/// Scan `buf` from `start`. `decode` reads one frame at the start of a slice
/// and returns it with its length; `seq` gives frames that must strictly
/// increase their sequence number (frames returning `None` are exempt).
pub fn scan<F: Frame>(
    buf: &[u8],
    start: usize,
    magic: [u8; 4],
    decode: impl Fn(&[u8]) -> Result<(F, usize), DecodeError>,
    seq: impl Fn(&F) -> Option<u64>,
) -> Scan<F> {
    let finder = memchr::memmem::Finder::new(&magic);
    let mut frames: Vec<(u32, F)> = Vec::new();
    // Gaps between frames: (gap range, index of the first frame after it).
    let mut gaps: Vec<(Range<usize>, usize)> = Vec::new();
    let mut last_seq: Option<u64> = None;
    let mut pos = start.min(buf.len());
    let mut data_end = pos;
    // Where the scan found nothing but zeros to the end of the buffer (the
    // usual end of a preallocated file), so the torn-tail check below need
    // not read those bytes again.
    let mut zero_from = None;
    loop {
        match try_frame(&buf[pos..], &decode, &seq, last_seq) {
            Some((f, n)) => {
                last_seq = seq(&f).or(last_seq);
                frames.push((pos as u32, f));
                pos += n;
                data_end = pos;
            }
            None => {
                if is_zero(&buf[pos..]) {
                    zero_from = Some(pos);
                    break;
                }
                let next = resync(buf, pos + 1, &finder, &decode, &seq, last_seq);
                match next {
                    Some(q) => {
                        gaps.push((pos..q, frames.len()));
                        pos = q;
                    }
                    None => break,
                }
            }
        }
    }
    let durable = frames
        .iter()
        .map(|(_, f)| f.synced_end() as usize)
        .max()
        .unwrap_or(0);
    let mut damaged = Vec::new();
    let mut dropped_frames = 0;
    for (gap, first_after) in gaps {
        if gap.start < durable {
            damaged.push(gap.start as u32..gap.end as u32);
        } else {
            dropped_frames = frames.len() - first_after;
            frames.truncate(first_after);
            data_end = gap.start;
            break;
        }
    }
    let torn = if zero_from == Some(data_end) {
        None
    } else {
        last_nonzero(&buf[data_end..]).map(|n| data_end as u32..(data_end + n + 1) as u32)
    };
    Scan {
        frames,
        end: data_end as u32,
        damaged,
        torn,
        dropped_frames,
    }
}

fn try_frame<F>(
    b: &[u8],
    decode: &impl Fn(&[u8]) -> Result<(F, usize), DecodeError>,
    seq: &impl Fn(&F) -> Option<u64>,
    last_seq: Option<u64>,
) -> Option<(F, usize)> {
    let (f, n) = decode(b).ok()?;
    match (seq(&f), last_seq) {
        (Some(s), Some(last)) if s <= last => None,
        _ => Some((f, n)),
    }
}

fn resync<F>(
    buf: &[u8],
    from: usize,
    finder: &memchr::memmem::Finder<'_>,
    decode: &impl Fn(&[u8]) -> Result<(F, usize), DecodeError>,
    seq: &impl Fn(&F) -> Option<u64>,
    last_seq: Option<u64>,
) -> Option<usize> {
    let mut at = from;
    while at < buf.len() {
        let q = at + finder.find(&buf[at..])?;
        if try_frame(&buf[q..], decode, seq, last_seq).is_some() {
            return Some(q);
        }
        at = q + 1;
    }
    None
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

/// Index of the last non-zero byte.
fn last_nonzero(b: &[u8]) -> Option<usize> {
    let mut end = b.len();
    while end > 0 {
        let start = end.saturating_sub(4096);
        let chunk = &b[start..end];
        if chunk.iter().fold(0u8, |acc, &x| acc | x) != 0 {
            return chunk.iter().rposition(|&x| x != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy frame: magic "TEST", seq u32, synced_end u32 (12 bytes).
    #[derive(Debug, PartialEq, Eq)]
    struct T(u32, u32);
    impl Frame for T {
        fn synced_end(&self) -> u32 {
            self.1
        }
    }
    fn dec(b: &[u8]) -> Result<(T, usize), DecodeError> {
        if b.len() < 12 {
            return Err(DecodeError::Incomplete);
        }
        if &b[0..4] != b"TEST" {
            return Err(DecodeError::BadMagic);
        }
        let s = u32::from_le_bytes(b[4..8].try_into().unwrap());
        let d = u32::from_le_bytes(b[8..12].try_into().unwrap());
        Ok((T(s, d), 12))
    }
    fn frame(seq: u32, synced: u32) -> Vec<u8> {
        let mut v = b"TEST".to_vec();
        v.extend_from_slice(&seq.to_le_bytes());
        v.extend_from_slice(&synced.to_le_bytes());
        v
    }
    fn run(buf: &[u8]) -> Scan<T> {
        scan(buf, 0, *b"TEST", dec, |t| Some(u64::from(t.0)))
    }

    #[test]
    fn clean_end_in_zero_fill() {
        let mut b = [frame(1, 0), frame(2, 0)].concat();
        b.resize(100, 0);
        let s = run(&b);
        assert_eq!(s.frames.len(), 2);
        assert_eq!(s.end, 24);
        assert_eq!(s.torn, None);
        assert!(s.damaged.is_empty());
    }

    #[test]
    fn torn_tail_is_cut_and_frames_after_it_dropped() {
        // frame 2 torn (zeroed middle), frame 3 survived; nothing was synced.
        let mut b = [
            frame(1, 0),
            vec![b'T', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            frame(3, 0),
        ]
        .concat();
        b.resize(64, 0);
        let s = run(&b);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.end, 12);
        assert_eq!(s.dropped_frames, 1);
        assert_eq!(s.torn, Some(12..29), "up to the last non-zero byte");
    }

    #[test]
    fn damage_inside_synced_data_is_skipped_and_reported() {
        // frame 3 says bytes up to 36 were synced, so the bad frame 2 was durable.
        let mut b = [frame(1, 0), vec![0xFF; 12], frame(3, 36)].concat();
        b.resize(64, 0);
        let s = run(&b);
        assert_eq!(
            s.frames.iter().map(|f| f.1 .0).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(s.damaged, vec![12..24]);
        assert_eq!(s.end, 36);
        assert_eq!(s.torn, None);
    }

    #[test]
    fn stale_frames_out_of_sequence_are_not_data() {
        let mut b = [frame(5, 0), frame(4, 0)].concat();
        b.resize(40, 0);
        let s = run(&b);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.torn, Some(12..17));
    }
}
