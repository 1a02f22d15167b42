//! A map with a hard cap on its size that never refuses an insert: two generations of at most
//! `cap` keys each; when the newer fills it becomes the older and the older is dropped. Under
//! a flood of new keys the oldest are forgotten first.

use std::collections::HashMap;

pub struct BoundedMap<V> {
    cap: usize,
    newer: HashMap<u64, V>,
    older: HashMap<u64, V>,
}

impl<V> BoundedMap<V> {
    /// Holds at most `2 * cap` keys.
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            cap: cap.max(1),
            newer: HashMap::new(),
            older: HashMap::new(),
        }
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        self.newer.get(&key).or_else(|| self.older.get(&key))
    }

    pub fn set(&mut self, key: u64, value: V) {
        if self.newer.len() >= self.cap && !self.newer.contains_key(&key) {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(key, value);
    }

    /// Keeps the entries `keep` says to; returns how many remain.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        self.newer.retain(|_, v| keep(v));
        self.older.retain(|_, v| keep(v));
        self.len()
    }

    /// Keys held, in both generations.
    #[allow(clippy::len_without_is_empty)] // nothing asks whether it is empty
    pub fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_twice_the_cap_and_the_newest_kept() {
        let mut map = BoundedMap::new(10);
        for k in 0..1000u64 {
            map.set(k, k);
            assert!(map.len() <= 20);
        }
        assert_eq!(map.get(999), Some(&999));
        assert_eq!(map.get(0), None);
    }

    #[test]
    fn retain_drops_what_it_is_told_to_in_both_generations() {
        let mut map = BoundedMap::new(10);
        // 15 keys: 10 went to the older generation, 5 are in the newer.
        for k in 0..15u64 {
            map.set(k, k);
        }
        assert_eq!(map.retain(|v| v % 2 == 0), 8);
        assert_eq!(map.len(), 8);
        for k in 0..15u64 {
            assert_eq!(map.get(k).is_some(), k % 2 == 0, "key {k}");
        }
    }
}
