//! The connections of one worker that may have more to read, in the order they get
//! their turn. "Queued" is kept here and only here: a connection is in the list at
//! most once, and pushing one that is already there does nothing, so no caller
//! keeps a flag in step with the list by hand.

use std::collections::VecDeque;

/// A FIFO of slab keys with membership.
#[derive(Debug, Default)]
pub struct ReadyList {
    order: VecDeque<usize>,
    /// `queued[key]`: `key` is in `order`. A key whose connection closed while
    /// queued stays until popped; a new connection in the same slot is then served
    /// by that entry.
    queued: Vec<bool>,
}

impl ReadyList {
    /// Puts `key` at the back, unless it is already in the list.
    pub fn push(&mut self, key: usize) {
        if key >= self.queued.len() {
            self.queued.resize(key + 1, false);
        }
        if let Some(queued) = self.queued.get_mut(key)
            && !*queued
        {
            *queued = true;
            self.order.push_back(key);
        }
    }

    /// Takes the key at the front.
    pub fn pop(&mut self) -> Option<usize> {
        let key = self.order.pop_front()?;
        if let Some(queued) = self.queued.get_mut(key) {
            *queued = false;
        }
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_queued_once_and_in_order() {
        let mut ready = ReadyList::default();
        ready.push(3);
        ready.push(1);
        ready.push(3);
        assert_eq!(ready.len(), 2);
        assert_eq!(ready.pop(), Some(3));
        ready.push(3);
        assert_eq!(ready.pop(), Some(1));
        assert_eq!(ready.pop(), Some(3));
        assert_eq!(ready.pop(), None);
        assert!(ready.is_empty());
    }
}
