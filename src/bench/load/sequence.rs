//! UDP sequence accounting: which replies of one socket came back, which came twice,
//! which overtook a later one. Datagrams may be lost, duplicated or reordered, so
//! each sequence number is a bit in a set that grows with the highest number seen
//! (one bit per message sent, 125 KB per million), not a counter.

/// What one reply was, relative to the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// The first reply to this sequence number; `late` if a higher one came first.
    First { late: bool },
    /// This sequence number had already been answered.
    Duplicate,
}

/// The sequence numbers answered so far on one socket.
#[derive(Debug, Default)]
pub(super) struct Sequences {
    /// A bit per sequence number.
    seen: Vec<u64>,
    max_seen: Option<u64>,
}

impl Sequences {
    /// Records a reply to `seq`.
    pub(super) fn arrive(&mut self, seq: u64) -> Arrival {
        let (word, bit) = (usize::try_from(seq / 64).unwrap_or(usize::MAX), seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word.saturating_add(1), 0);
        }
        match self.seen.get_mut(word) {
            Some(w) if *w & (1 << bit) == 0 => *w |= 1 << bit,
            _ => return Arrival::Duplicate,
        }
        let late = self.max_seen.is_some_and(|max| seq < max);
        self.max_seen = Some(self.max_seen.map_or(seq, |max| max.max(seq)));
        Arrival::First { late }
    }

    /// Frees the set once the socket is done.
    pub(super) fn release(&mut self) {
        self.seen = Vec::new();
    }
}

/// Measured messages that never got a reply: every measured reply is counted once
/// (duplicates are not), so the difference is what was lost on the way or in the
/// server.
pub(super) fn lost(measured_sent: u64, measured_received: u64) -> u64 {
    measured_sent.saturating_sub(measured_received)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Arrival = Arrival::First { late: false };
    const LATE: Arrival = Arrival::First { late: true };

    fn arrivals(seqs: &[u64]) -> Vec<Arrival> {
        let mut s = Sequences::default();
        seqs.iter().map(|&q| s.arrive(q)).collect()
    }

    #[test]
    fn in_order_replies_are_all_first_and_on_time() {
        assert_eq!(arrivals(&[0, 1, 2, 3]), [FIRST; 4]);
    }

    #[test]
    fn a_reply_overtaken_by_a_later_one_is_late() {
        assert_eq!(arrivals(&[0, 2, 1, 3]), [FIRST, FIRST, LATE, FIRST]);
    }

    #[test]
    fn a_second_reply_to_the_same_number_is_a_duplicate() {
        assert_eq!(
            arrivals(&[0, 1, 1, 0, 2]),
            [FIRST, FIRST, Arrival::Duplicate, Arrival::Duplicate, FIRST]
        );
    }

    #[test]
    fn gaps_are_loss_and_far_numbers_grow_the_set() {
        let mut s = Sequences::default();
        // Numbers across word boundaries, and one far away.
        for q in [63, 64, 127, 128, 1_000_000] {
            assert_eq!(s.arrive(q), FIRST, "{q}");
        }
        assert_eq!(s.arrive(65), LATE);
        assert_eq!(s.arrive(64), Arrival::Duplicate);
        assert_eq!(s.arrive(1_000_000), Arrival::Duplicate);
        // 10 sent, 6 distinct replies: 4 lost.
        assert_eq!(lost(10, 6), 4);
        assert_eq!(lost(3, 5), 0);
    }

    #[test]
    fn every_permutation_of_a_few_counts_each_number_once() {
        let seqs = [0u64, 1, 2, 3];
        let mut perm = seqs;
        // Heap's algorithm over 4 elements: 24 orders.
        let mut c = [0usize; 4];
        let check = |p: &[u64; 4]| {
            let mut with_dups = p.to_vec();
            with_dups.extend_from_slice(p);
            let a = arrivals(&with_dups);
            let firsts = a
                .iter()
                .filter(|x| matches!(x, Arrival::First { .. }))
                .count();
            assert_eq!(firsts, 4, "{p:?}");
            assert!(a[4..].iter().all(|x| *x == Arrival::Duplicate));
            // Late ones: those below an earlier maximum.
            let mut max = None;
            let late = p
                .iter()
                .filter(|&&q| {
                    let l = max.is_some_and(|m| q < m);
                    max = Some(max.map_or(q, |m: u64| m.max(q)));
                    l
                })
                .count();
            let seen_late = a.iter().filter(|x| **x == LATE).count();
            assert_eq!(seen_late, late, "{p:?}");
        };
        check(&perm);
        let mut i = 0;
        while i < 4 {
            if c[i] < i {
                if i % 2 == 0 {
                    perm.swap(0, i);
                } else {
                    perm.swap(c[i], i);
                }
                check(&perm);
                c[i] += 1;
                i = 0;
            } else {
                c[i] = 0;
                i += 1;
            }
        }
    }
}
