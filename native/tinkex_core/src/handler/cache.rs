//! The process-wide handler cache, keyed by `{name, config}`.
//!
//! Unlike the Python SDK's LRU of 100, an entry is never evicted while a
//! user holds its handler (so the connection cap stays strict), and it is
//! freed as soon as nobody does: the cache keeps only weak references.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::Handler;
use crate::config::RetryConfig;

type Key = (String, RetryConfig);

fn cache() -> &'static Mutex<HashMap<Key, Weak<Handler>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Weak<Handler>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(super) fn get(name: &str, config: RetryConfig) -> Arc<Handler> {
    let mut map = cache().lock().unwrap_or_else(|p| p.into_inner());
    let key = (name.to_owned(), config);
    if let Some(h) = map.get(&key).and_then(Weak::upgrade) {
        return h;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let h = Arc::new(Handler::new(name, key.1.clone()));
    map.insert(key, Arc::downgrade(&h));
    h
}

/// How many cached handlers are alive (held by someone).
pub fn live_handlers() -> usize {
    let map = cache().lock().unwrap_or_else(|p| p.into_inner());
    map.values().filter(|w| w.strong_count() > 0).count()
}
