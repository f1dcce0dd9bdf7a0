//! A read-through cache that never keeps a value older than the last
//! invalidation.
//!
//! The hot routes (every authenticated request checks a token; `/contacts` is
//! what clients ask most) must not wait on SQLite. Values are filled after a
//! store read and dropped by every write that changes them. The race to avoid
//! is a read that started before a write, finishing after the write's
//! invalidation and caching the old value: each fill carries the epoch seen
//! before its store read and is discarded if any invalidation happened since.
//!
//! In one process every write goes through here. In a cluster the other
//! nodes' invalidations come over the bus (`crate::cluster`), which also
//! says when the caches cannot be trusted at all (then the store is read).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// Past this many entries the cache is cleared rather than grown.
const MAX_ENTRIES: usize = 200_000;

#[derive(Debug)]
struct Inner<K, V> {
    epoch: u64,
    map: HashMap<K, V>,
}

/// See the module docs.
#[derive(Debug)]
pub struct EpochCache<K, V> {
    inner: Mutex<Inner<K, V>>,
}

impl<K, V> Default for EpochCache<K, V> {
    fn default() -> Self {
        Self { inner: Mutex::new(Inner { epoch: 0, map: HashMap::new() }) }
    }
}

impl<K: Eq + Hash, V: Clone> EpochCache<K, V> {
    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value, or the epoch to pass to [`EpochCache::fill`] after
    /// reading the store.
    pub fn get(&self, key: &K) -> Result<V, u64> {
        let inner = self.lock();
        inner.map.get(key).cloned().ok_or(inner.epoch)
    }

    /// Caches a value read from the store, unless something was invalidated
    /// since `epoch`.
    pub fn fill(&self, key: K, value: V, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch {
            if inner.map.len() >= MAX_ENTRIES {
                inner.map.clear();
            }
            inner.map.insert(key, value);
        }
    }

    /// Updates a cached value in place (no-op if absent).
    pub fn update(&self, key: &K, f: impl FnOnce(&mut V)) {
        if let Some(v) = self.lock().map.get_mut(key) {
            f(v);
        }
    }

    /// Drops the given keys after a write.
    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a K>)
    where
        K: 'a,
    {
        let mut inner = self.lock();
        inner.epoch += 1;
        for k in keys {
            inner.map.remove(k);
        }
    }

    /// Drops every entry whose value matches.
    pub fn invalidate_where(&self, mut pred: impl FnMut(&V) -> bool) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.map.retain(|_, v| !pred(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_fill_is_discarded() {
        let c: EpochCache<u32, &str> = EpochCache::default();
        let epoch = c.get(&1).unwrap_err();
        // A write lands between our store read and our fill.
        c.invalidate([&1]);
        c.fill(1, "old", epoch);
        assert!(c.get(&1).is_err());
        let epoch = c.get(&1).unwrap_err();
        c.fill(1, "new", epoch);
        assert_eq!(c.get(&1), Ok("new"));
    }

    #[test]
    fn invalidate_where_and_update() {
        let c: EpochCache<u32, u32> = EpochCache::default();
        c.fill(1, 10, 0);
        c.fill(2, 20, 0);
        c.update(&1, |v| *v += 1);
        assert_eq!(c.get(&1), Ok(11));
        c.invalidate_where(|v| *v == 20);
        assert!(c.get(&2).is_err());
        assert_eq!(c.get(&1), Ok(11));
    }
}
