//! The connections that have work to do this turn, each at most once: the flag
//! "queued" and the queue are kept together so they cannot disagree.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(super) struct ReadyList {
    queue: VecDeque<usize>,
    queued: Vec<bool>,
}

impl ReadyList {
    pub(super) fn new(connections: usize) -> Self {
        ReadyList {
            queue: VecDeque::with_capacity(connections),
            queued: vec![false; connections],
        }
    }

    /// Queues `i` unless it already is.
    pub(super) fn push(&mut self, i: usize) {
        if let Some(q) = self.queued.get_mut(i)
            && !*q
        {
            *q = true;
            self.queue.push_back(i);
        }
    }

    pub(super) fn pop(&mut self) -> Option<usize> {
        let i = self.queue.pop_front()?;
        if let Some(q) = self.queued.get_mut(i) {
            *q = false;
        }
        Some(i)
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_is_queued_once_in_arrival_order() {
        let mut r = ReadyList::new(3);
        r.push(2);
        r.push(0);
        r.push(2);
        r.push(7); // not a connection
        assert_eq!(r.len(), 2);
        assert_eq!(r.pop(), Some(2));
        r.push(2);
        assert_eq!(r.pop(), Some(0));
        assert_eq!(r.pop(), Some(2));
        assert_eq!(r.pop(), None);
        assert!(r.is_empty());
    }
}
