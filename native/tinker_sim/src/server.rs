//! The accept loop: one task per connection, HTTP/1.1 and HTTP/2 (prior
//! knowledge) through hyper-util's auto builder.
//!
//! A handler that must "close the connection without answering" notifies
//! the connection's `abort`; the connection task then drops the connection
//! future, which closes the socket before any byte of a response is
//! written, so the client sees a connection error (hyper/reqwest: "connection
//! closed before message completed"; httpx: "Server disconnected").

use crate::routes;
use crate::state::SimState;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

/// Accepts connections until `shutdown` changes or its sender is dropped.
pub async fn accept_loop(
    listener: TcpListener,
    sim: Arc<SimState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors or similar: back off briefly.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let abort = Arc::new(Notify::new());
            let handler_abort = abort.clone();
            let service =
                service_fn(move |req| routes::handle(sim.clone(), req, handler_abort.clone()));
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = abort.notified() => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}
