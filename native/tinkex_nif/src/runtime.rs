//! The one tokio runtime of the VM, created on first use.

use std::sync::OnceLock;

use tokio::runtime::Runtime;

static WORKERS: OnceLock<usize> = OnceLock::new();
static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// Records the worker count passed as `load_info` (the number of
/// schedulers unless the application env says otherwise).
pub fn configure(workers: Option<usize>) {
    if let Some(n) = workers.filter(|n| *n > 0) {
        let _ = WORKERS.set(n.min(64));
    }
}

/// The runtime; built lazily so loading the NIF starts no threads.
pub fn get() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        let workers = WORKERS.get().copied().unwrap_or(2);
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("tinkex-tokio")
            .enable_all()
            .build()
            .expect("tinkex: cannot start the tokio runtime")
    })
}
