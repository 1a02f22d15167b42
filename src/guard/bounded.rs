//! A map with a hard cap on its size that never refuses an insert: two generations of at most
//! `cap` keys each; when the newer fills it becomes the older and the older is dropped. Under
//! a flood of new keys the oldest are forgotten first.
//!
//! Its keys are already hashes under a per-process random key (no number is kept), as
//! uniform as any hasher would make them: the map takes them as they are instead of hashing
//! them again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

pub struct BoundedMap<V> {
    cap: usize,
    newer: HashMap<u64, V, Keyed>,
    older: HashMap<u64, V, Keyed>,
}

type Keyed = BuildHasherDefault<KeyedHash>;

/// The key itself, for keys that are keyed hashes already.
#[derive(Default)]
struct KeyedHash(u64);

impl Hasher for KeyedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys come here (write_u64); any other input is folded in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

impl<V> BoundedMap<V> {
    /// Holds at most `2 * cap` keys.
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            cap: cap.max(1),
            newer: HashMap::default(),
            older: HashMap::default(),
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
