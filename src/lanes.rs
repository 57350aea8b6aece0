//! Which lane to serve next: the scheduling policy over the ready lanes.
//! Pure and in-memory; it sees only the bitmap of non-empty lanes.
//!
//! - [`Scheduling::Strict`]: always the highest non-empty priority.
//! - [`Scheduling::Weighted`]: service goes in rounds. In a round, lane `p`
//!   may be served `p + 1` times (its credit); the highest non-empty lane
//!   with credit left goes first; when no non-empty lane has credit, a new
//!   round begins. Every lane in use therefore gets a share of dequeues that
//!   grows with its priority, `(p + 1) / S` where `S` is the sum of `q + 1`
//!   over the lanes in use, and no non-empty lane waits more than
//!   `W(p) = Σ_{q ≠ p} (q + 1) + Σ_{q > p} (q + 1)` consecutive dequeues
//!   (sums over the lanes in use; at most 65,535 with all 256 in use): at
//!   worst it spent its credit and waits for the others to spend theirs,
//!   then for the higher lanes at the start of the next round.
//!
//! Both cost O(1) per pick whatever the number of lanes: a pick tests four
//! 64-bit words, and a new round clears four words (credits are refilled
//! lazily by round number).

/// How ready lanes share the consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scheduling {
    /// Higher priority first, always (a busy high lane starves lower ones).
    #[default]
    Strict,
    /// Weighted rounds: lane `p` gets `p + 1` turns per round; no non-empty
    /// lane starves (see the module docs for the bound).
    Weighted,
}

/// Scheduler state.
#[derive(Debug)]
pub(crate) struct Scheduler {
    policy: Scheduling,
    round: u32,
    /// Lanes that spent their credit in this round.
    spent: [u64; 4],
    credit: Vec<u16>,
    credit_round: Vec<u32>,
}

/// Highest set bit of a 256-bit map.
pub(crate) fn highest(bits: [u64; 4]) -> Option<u8> {
    (0..4).rev().find_map(|w| {
        let b = bits[w];
        (b != 0).then(|| (w * 64 + 63 - b.leading_zeros() as usize) as u8)
    })
}

impl Scheduler {
    pub fn new(policy: Scheduling) -> Self {
        Scheduler {
            policy,
            round: 0,
            spent: [0; 4],
            credit: vec![0; 256],
            credit_round: vec![u32::MAX; 256],
        }
    }

    /// The lane to serve next, given the non-empty lanes.
    pub fn pick(&mut self, nonempty: [u64; 4]) -> Option<u8> {
        if self.policy == Scheduling::Strict {
            return highest(nonempty);
        }
        let eligible = [0, 1, 2, 3].map(|w| nonempty[w] & !self.spent[w]);
        if let Some(p) = highest(eligible) {
            return Some(p);
        }
        let p = highest(nonempty)?;
        self.round = self.round.wrapping_add(1);
        self.spent = [0; 4];
        Some(p)
    }

    /// Lane `p` was served once.
    pub fn charge(&mut self, p: u8) {
        if self.policy == Scheduling::Strict {
            return;
        }
        let i = usize::from(p);
        if self.credit_round[i] != self.round {
            self.credit_round[i] = self.round;
            self.credit[i] = u16::from(p) + 1;
        }
        self.credit[i] -= 1;
        if self.credit[i] == 0 {
            self.spent[i / 64] |= 1 << (i % 64);
        }
    }
}

/// The stated starvation bound `W(p)` for the lanes in `in_use`.
pub fn weighted_wait_bound(p: u8, in_use: &[u8]) -> u64 {
    let others: u64 = in_use
        .iter()
        .filter(|&&q| q != p)
        .map(|&q| u64::from(q) + 1)
        .sum();
    let higher: u64 = in_use
        .iter()
        .filter(|&&q| q > p)
        .map(|&q| u64::from(q) + 1)
        .sum();
    others + higher
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Just;
    use proptest::strategy::Strategy;

    fn bitmap(lanes: &[u8]) -> [u64; 4] {
        let mut b = [0u64; 4];
        for &p in lanes {
            b[usize::from(p / 64)] |= 1 << (p % 64);
        }
        b
    }

    #[test]
    fn strict_always_takes_the_highest() {
        let mut s = Scheduler::new(Scheduling::Strict);
        for _ in 0..10 {
            let p = s.pick(bitmap(&[0, 7, 200])).unwrap();
            s.charge(p);
            assert_eq!(p, 200);
        }
        assert_eq!(s.pick([0; 4]), None);
    }

    #[test]
    fn weighted_shares_follow_priority() {
        let mut s = Scheduler::new(Scheduling::Weighted);
        let mut served = [0u32; 256];
        for _ in 0..(1 + 4) * 100 {
            let p = s.pick(bitmap(&[0, 3])).unwrap();
            s.charge(p);
            served[usize::from(p)] += 1;
        }
        assert_eq!((served[0], served[3]), (100, 400));
    }

    #[test]
    fn highest_finds_every_bit() {
        for p in 0..=255u8 {
            assert_eq!(highest(bitmap(&[p])), Some(p));
            assert_eq!(highest(bitmap(&[0, p])), Some(p));
        }
    }

    proptest::proptest! {
        /// The starvation bound holds for any mix of enqueues and dequeues.
        #[test]
        fn weighted_never_exceeds_the_stated_wait(
            ops in proptest::collection::vec((proptest::prop_oneof![Just(None), (0u8..=255).prop_map(Some)], 1u8..40), 1..400),
            lanes in proptest::collection::vec(0u8..=255, 1..6),
        ) {
            use proptest::prelude::*;
            let mut s = Scheduler::new(Scheduling::Weighted);
            let mut depth = [0u64; 256];
            let mut waited = [0u64; 256];
            let mut in_use: Vec<u8> = Vec::new();
            for (op, n) in ops {
                match op {
                    Some(k) => {
                        let p = lanes[usize::from(k) % lanes.len()];
                        depth[usize::from(p)] += u64::from(n);
                        if !in_use.contains(&p) {
                            in_use.push(p);
                        }
                    }
                    None => {
                        for _ in 0..n {
                            let map = bitmap(&(0..=255u8).filter(|&p| depth[usize::from(p)] > 0).collect::<Vec<_>>());
                            let Some(p) = s.pick(map) else { break };
                            prop_assert!(depth[usize::from(p)] > 0);
                            s.charge(p);
                            depth[usize::from(p)] -= 1;
                            waited[usize::from(p)] = 0;
                            for q in 0..256 {
                                if q != usize::from(p) && depth[q] > 0 {
                                    waited[q] += 1;
                                    let bound = weighted_wait_bound(q as u8, &in_use);
                                    prop_assert!(waited[q] <= bound, "lane {} waited {} > {}", q, waited[q], bound);
                                }
                            }
                        }
                    }
                }
                for q in 0..256 {
                    if depth[q] == 0 {
                        waited[q] = 0;
                    }
                }
            }
        }
    }
}
