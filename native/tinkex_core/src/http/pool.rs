//! The pooled HTTP clients of one base URL.
//!
//! `hyper` (under `reqwest`) multiplexes every request to an origin onto a
//! single HTTP/2 connection and queues requests beyond the server's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (often 100–256) instead of opening
//! another connection. With long polls held ~30 s by the server, one
//! connection would cap the whole process at a few hundred futures in
//! flight. So, like the Python SDK's connection pools (at most 50 requests
//! per client), a base URL gets a small set of clients, each with its own
//! connection pool, and a request goes to the first client carrying fewer
//! than [`REQUESTS_PER_CLIENT`]. Under HTTP/1.1 this changes nothing but
//! which pool a connection sits in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::registry::WeakRegistry;

/// Concurrent requests one client carries before the next one is used.
pub const REQUESTS_PER_CLIENT: usize = 50;
/// Most clients per base URL; past it, requests go to the least loaded.
pub const MAX_CLIENTS: usize = 256;
/// Connect timeout of every request (the SDK's `connect=5.0`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client sets in use, by base URL.
static SETS: LazyLock<WeakRegistry<String, ClientSet>> = LazyLock::new(WeakRegistry::new);

/// How many base URLs have a client set in use in the process.
pub fn live_client_sets() -> usize {
    SETS.live()
}

/// Entries the client-set registry holds, dead ones not yet swept included.
#[doc(hidden)]
pub fn client_set_entries() -> usize {
    SETS.entries()
}

#[derive(Debug)]
struct Shard {
    client: reqwest::Client,
    inflight: AtomicUsize,
}

impl Shard {
    fn try_take(&self) -> bool {
        self.inflight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < REQUESTS_PER_CLIENT).then_some(n + 1)
            })
            .is_ok()
    }
}

/// A request slot on one client; frees the slot on drop.
#[derive(Debug)]
pub(crate) struct Lease(Arc<Shard>);

impl Lease {
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.0.client
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The clients of one base URL (see the module docs).
#[derive(Debug)]
pub(crate) struct ClientSet {
    shards: RwLock<Vec<Arc<Shard>>>,
}

fn new_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("HTTP client: {e}")))
}

impl ClientSet {
    fn new() -> Result<ClientSet, Error> {
        let first = Arc::new(Shard {
            client: new_client()?,
            inflight: AtomicUsize::new(0),
        });
        Ok(ClientSet {
            shards: RwLock::new(vec![first]),
        })
    }

    /// The process-wide set of `base_url`, shared by every endpoint of
    /// that URL; it (and its connections) goes when the last one does.
    pub(crate) fn for_base_url(base_url: &str) -> Result<Arc<ClientSet>, Error> {
        SETS.get_or_try_insert_with(base_url.to_owned(), ClientSet::new)
    }

    /// A client to build requests with (any client can build them).
    pub(crate) fn builder(&self) -> reqwest::Client {
        self.shards.read().unwrap_or_else(|p| p.into_inner())[0]
            .client
            .clone()
    }

    /// A slot on the first client with room, adding a client when all are
    /// full (up to [`MAX_CLIENTS`]).
    pub(crate) fn lease(&self) -> Result<Lease, Error> {
        {
            let shards = self.shards.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = shards.iter().find(|s| s.try_take()) {
                return Ok(Lease(s.clone()));
            }
        }
        let mut shards = self.shards.write().unwrap_or_else(|p| p.into_inner());
        // Another request may have added a client meanwhile.
        if let Some(s) = shards.iter().find(|s| s.try_take()) {
            return Ok(Lease(s.clone()));
        }
        if shards.len() >= MAX_CLIENTS {
            let s = shards
                .iter()
                .min_by_key(|s| s.inflight.load(Ordering::Acquire))
                .expect("never empty")
                .clone();
            s.inflight.fetch_add(1, Ordering::AcqRel);
            return Ok(Lease(s));
        }
        let s = Arc::new(Shard {
            client: new_client()?,
            inflight: AtomicUsize::new(1),
        });
        shards.push(s.clone());
        Ok(Lease(s))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.read().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keeps_only_sets_in_use() {
        let held = ClientSet::for_base_url("http://held.test").unwrap();
        for i in 0..10_000 {
            drop(ClientSet::for_base_url(&format!("http://u{i}.test")).unwrap());
        }
        // Other tests of this binary may hold a few sets meanwhile.
        assert!(
            client_set_entries() < 200,
            "{} entries",
            client_set_entries()
        );
        let again = ClientSet::for_base_url("http://held.test").unwrap();
        assert!(Arc::ptr_eq(&held, &again));
    }

    #[test]
    fn grows_when_full_and_reuses_freed_slots() {
        let set = ClientSet::new().unwrap();
        let leases: Vec<_> = (0..REQUESTS_PER_CLIENT)
            .map(|_| set.lease().unwrap())
            .collect();
        assert_eq!(set.len(), 1);
        let extra = set.lease().unwrap();
        assert_eq!(set.len(), 2);
        drop(leases);
        drop(extra);
        let _again: Vec<_> = (0..REQUESTS_PER_CLIENT)
            .map(|_| set.lease().unwrap())
            .collect();
        assert_eq!(set.len(), 2);
    }
}
