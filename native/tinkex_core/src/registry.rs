//! A process-wide map from keys to shared values that never keeps a value
//! alive: it holds weak references, so an entry lives exactly as long as
//! some user holds its value, and a key that comes back later gets a fresh
//! value. The handler cache, the rate-limiter registry and the HTTP client
//! sets all use it, so a VM that talks to many keys or base URLs over its
//! life holds entries only for those still in use.
//!
//! Dead entries are swept on insert once the map has doubled since the
//! last sweep: a sweep costs O(entries) and happens at most once per as
//! many inserts, so every insert is O(1) amortised and the map never holds
//! more than about twice the live entries (plus [`MIN_SWEEP`]).
//!
//! ```
//! use std::sync::Arc;
//! use tinkex_core::registry::WeakRegistry;
//!
//! let reg: WeakRegistry<&str, u32> = WeakRegistry::new();
//! let a = reg.get_or_insert_with("a", || 1);
//! let b = reg.get_or_insert_with("a", || 2);
//! assert!(Arc::ptr_eq(&a, &b));
//! assert_eq!(reg.live(), 1);
//! drop((a, b));
//! assert_eq!(reg.live(), 0);
//! assert_eq!(*reg.get_or_insert_with("a", || 3), 3);
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Entries the map may hold before its first sweep.
pub const MIN_SWEEP: usize = 32;

/// Keys to weakly held shared values (see the module docs).
#[derive(Debug)]
pub struct WeakRegistry<K, V> {
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, Weak<V>>,
    /// The next insert sweeps dead entries once the map holds this many.
    sweep_at: usize,
}

impl<K: Eq + Hash, V> Default for WeakRegistry<K, V> {
    fn default() -> Self {
        WeakRegistry::new()
    }
}

impl<K: Eq + Hash, V> WeakRegistry<K, V> {
    /// An empty registry.
    pub fn new() -> WeakRegistry<K, V> {
        WeakRegistry {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of `key` while anyone holds it; otherwise a new one from
    /// `make` (called under the registry's lock, so two callers never make
    /// two values for one key).
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        match self.get_or_try_insert_with(key, || Ok::<V, std::convert::Infallible>(make())) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// [`WeakRegistry::get_or_insert_with`] for a `make` that can fail;
    /// nothing is inserted then.
    pub fn get_or_try_insert_with<E>(
        &self,
        key: K,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let mut inner = self.lock();
        if let Some(v) = inner.map.get(&key).and_then(Weak::upgrade) {
            return Ok(v);
        }
        let v = Arc::new(make()?);
        if inner.map.len() >= inner.sweep_at {
            inner.map.retain(|_, w| w.strong_count() > 0);
            inner.sweep_at = (inner.map.len() * 2).max(MIN_SWEEP);
        }
        inner.map.insert(key, Arc::downgrade(&v));
        Ok(v)
    }

    /// How many values are alive (held by someone).
    pub fn live(&self) -> usize {
        let inner = self.lock();
        inner.map.values().filter(|w| w.strong_count() > 0).count()
    }

    /// How many entries the map holds, dead ones not yet swept included:
    /// what the registry costs in memory.
    pub fn entries(&self) -> usize {
        self.lock().map.len()
    }

    /// The keys of the live values.
    pub fn live_keys(&self) -> Vec<K>
    where
        K: Clone,
    {
        let inner = self.lock();
        inner
            .map
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_dropped_keys_leave_a_small_map() {
        let reg: WeakRegistry<u64, u64> = WeakRegistry::new();
        let kept = reg.get_or_insert_with(u64::MAX, || 7);
        for k in 0..10_000 {
            drop(reg.get_or_insert_with(k, || k));
        }
        assert_eq!(reg.live(), 1);
        assert!(reg.entries() <= 2 * MIN_SWEEP, "{} entries", reg.entries());
        assert_eq!(reg.live_keys(), vec![u64::MAX]);
        assert!(Arc::ptr_eq(&kept, &reg.get_or_insert_with(u64::MAX, || 0)));
    }

    #[test]
    fn live_values_are_never_swept() {
        let reg: WeakRegistry<u64, u64> = WeakRegistry::new();
        let held: Vec<_> = (0..1000).map(|k| reg.get_or_insert_with(k, || k)).collect();
        for k in 1000..3000 {
            drop(reg.get_or_insert_with(k, || k));
        }
        assert_eq!(reg.live(), 1000);
        for (k, v) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(v, &reg.get_or_insert_with(k as u64, || 0)));
        }
        assert!(reg.entries() <= 2 * 1000 + MIN_SWEEP);
    }

    #[test]
    fn a_failed_make_inserts_nothing() {
        let reg: WeakRegistry<&str, u8> = WeakRegistry::new();
        assert_eq!(reg.get_or_try_insert_with("k", || Err("no")), Err("no"));
        assert_eq!(reg.entries(), 0);
    }
}
