//! Answer bodies of any size, generated as they are sent (the `body_bytes`
//! action): `{"pad":"xxx…"}`, valid JSON of exactly the requested length,
//! so a client without a body limit would read (and parse) all of it while
//! the simulator holds only one 64 KiB chunk at a time.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The smallest padded body: `{"pad":""}`.
pub const MIN_BYTES: u64 = 10;
const PREFIX: &[u8] = b"{\"pad\":\"";
const SUFFIX: &[u8] = b"\"}";
const CHUNK: u64 = 64 * 1024;

/// Every answer body of the simulator.
pub type SimBody = Either<Full<Bytes>, Padded>;

/// A padded JSON body of `len` bytes (at least [`MIN_BYTES`]).
#[derive(Debug)]
pub struct Padded {
    len: u64,
    sent: u64,
    chunked: bool,
}

impl Padded {
    /// `len` bytes; `chunked` leaves the length unannounced (HTTP/1.1
    /// chunked encoding) instead of sending `content-length`.
    pub fn new(len: u64, chunked: bool) -> Padded {
        Padded {
            len: len.max(MIN_BYTES),
            sent: 0,
            chunked,
        }
    }

    fn byte_at(&self, i: u64) -> u8 {
        let tail = self.len - SUFFIX.len() as u64;
        if i < PREFIX.len() as u64 {
            PREFIX[i as usize]
        } else if i >= tail {
            SUFFIX[(i - tail) as usize]
        } else {
            b'x'
        }
    }
}

impl Body for Padded {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= self.len {
            return Poll::Ready(None);
        }
        let end = (self.sent + CHUNK).min(self.len);
        let chunk: Vec<u8> = (self.sent..end).map(|i| self.byte_at(i)).collect();
        self.sent = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.len - self.sent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn padded_bodies_are_json_of_the_exact_length() {
        for len in [10, 11, 65_536, 65_537, 200_003] {
            let body = Padded::new(len, false);
            assert_eq!(body.size_hint().exact(), Some(len));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(bytes.len() as u64, len);
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["pad"].as_str().unwrap().len() as u64, len - 10);
        }
        assert_eq!(Padded::new(100, true).size_hint().exact(), None);
    }
}
