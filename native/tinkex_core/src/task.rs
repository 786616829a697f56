//! Native work that always ends in an answer.
//!
//! An Elixir caller of a NIF that works on tokio waits in a `receive` for
//! the work's message, with no timeout. A task that panicked would leave
//! it there for ever, so every task the NIF spawns goes through
//! [`spawn_answered`]: the work's output, or the panic turned into an
//! [`ErrorKind::Internal`] error, is handed to the answer, which sends the
//! message.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use tinkex_core::error::ErrorKind;
//! use tinkex_core::task::spawn_answered;
//!
//! let (tx, rx) = tokio::sync::oneshot::channel();
//! let work = async {
//!     if true {
//!         panic!("a bug");
//!     }
//!     Ok::<u32, tinkex_core::error::Error>(1)
//! };
//! spawn_answered(&tokio::runtime::Handle::current(), work, move |r| {
//!     let _ = tx.send(r);
//! });
//! let e = rx.await.unwrap().unwrap_err();
//! assert_eq!(e.kind, ErrorKind::Internal);
//! assert!(e.message.contains("a bug"));
//! # });
//! ```

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind};

/// The error a caught panic becomes, with the panic's message.
pub fn panic_error(payload: &(dyn Any + Send)) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    Error::new(
        ErrorKind::Internal,
        format!("panic in the native code: {msg}"),
    )
}

/// A future that yields its inner future's output, or the panic error if
/// polling it panicked. See [`catch_panic`].
#[must_use = "futures do nothing unless polled"]
pub struct CatchPanic<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // After a panic the inner future is never polled again: this
        // future is done, so whatever state the panic left is only dropped.
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_error(&*payload))),
        }
    }
}

/// `fut`, with a panic while polling it turned into an error.
pub fn catch_panic<F: Future>(fut: F) -> CatchPanic<F> {
    CatchPanic {
        inner: Box::pin(fut),
    }
}

/// Spawns `work` on `rt` and hands its result — or, if it panicked, the
/// panic error — to `answer`, exactly once, unless the task is aborted
/// (its caller is gone). A panic inside `answer` itself is caught and
/// dropped: there is nobody left to tell.
pub fn spawn_answered<T, F, A>(rt: &Handle, work: F, answer: A) -> JoinHandle<()>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Error>> + Send + 'static,
    A: FnOnce(Result<T, Error>) + Send + 'static,
{
    rt.spawn(async move {
        let result = catch_panic(work).await.and_then(|r| r);
        let _ = catch_unwind(AssertUnwindSafe(move || answer(result)));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_after_an_await_is_answered_as_an_error() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn_answered(
            &Handle::current(),
            async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let v: Vec<u8> = Vec::new();
                Ok::<u8, Error>(v[3])
            },
            move |r| {
                let _ = tx.send(r);
            },
        );
        let e = rx.await.expect("answered").unwrap_err();
        assert_eq!((e.kind, e.retryable), (ErrorKind::Internal, false));
        assert!(e.message.contains("index out of bounds"), "{}", e.message);
    }

    #[tokio::test]
    async fn results_and_errors_pass_through() {
        for want in [Ok(7u8), Err(Error::http(503, "busy"))] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let w = want.clone();
            spawn_answered(&Handle::current(), async move { w }, move |r| {
                let _ = tx.send(r);
            });
            assert_eq!(rx.await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn an_aborted_task_is_not_answered() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
        let h = spawn_answered(
            &Handle::current(),
            std::future::pending::<Result<(), Error>>(),
            move |r| {
                let _ = tx.send(r);
            },
        );
        h.abort();
        assert!(rx.await.is_err(), "the answer was dropped, not called");
    }
}
