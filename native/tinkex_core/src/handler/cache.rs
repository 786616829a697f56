//! The process-wide handler cache, keyed by `{name, config}`.
//!
//! Unlike the Python SDK's LRU of 100, an entry is never evicted while a
//! user holds its handler (so the connection cap stays strict), and it is
//! freed as soon as nobody does: the cache keeps only weak references.

use std::sync::{Arc, LazyLock};

use super::Handler;
use crate::config::RetryConfig;
use crate::registry::WeakRegistry;

type Key = (String, RetryConfig);

static CACHE: LazyLock<WeakRegistry<Key, Handler>> = LazyLock::new(WeakRegistry::new);

pub(super) fn get(name: &str, config: RetryConfig) -> Arc<Handler> {
    CACHE.get_or_insert_with((name.to_owned(), config.clone()), || {
        Handler::new(name, config)
    })
}

/// How many cached handlers are alive (held by someone).
pub fn live_handlers() -> usize {
    CACHE.live()
}

/// Entries the cache holds, dead ones not yet swept included.
#[cfg(test)]
pub(super) fn entries() -> usize {
    CACHE.entries()
}
