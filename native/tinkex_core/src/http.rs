//! HTTP plumbing: the pooled `reqwest` clients of a base URL (shared by the
//! whole process, see [`pool`]), the headers every request carries, and the
//! mapping of transport failures and non-success answers to [`Error`].
//!
//! An [`Endpoint`] is cheap to clone (an `Arc`) and never prints its API key:
//!
//! ```
//! use tinkex_core::http::Endpoint;
//! let ep = Endpoint::new("http://127.0.0.1:1/", "tml-secret").unwrap();
//! assert_eq!(ep.base_url(), "http://127.0.0.1:1");
//! assert!(!format!("{ep:?}").contains("secret"));
//! assert!(!format!("{}", ep.api_key()).contains("secret"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, RequestBuilder, Url};

use crate::error::{Error, ErrorKind};

pub mod pool;
mod reply;

pub use pool::{CONNECT_TIMEOUT, MAX_CLIENTS, REQUESTS_PER_CLIENT};
pub use reply::{BodyClass, BodyLimits, Reply};

/// Timeout of a request that sets none (the SDK's default 60 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest server-requested retry delay honoured (the SDK's 60 s).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Header names, lowercase as HTTP/2 wants them.
pub mod names {
    use reqwest::header::HeaderName;
    /// The API key.
    pub const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
    /// Kept across transport resends of one logical request.
    pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");
    /// Transport resends so far of this request.
    pub const RETRY_COUNT: HeaderName = HeaderName::from_static("x-stainless-retry-count");
    /// This client's version.
    pub const SDK_VERSION: HeaderName = HeaderName::from_static("x-sdk-version");
    /// The public method that issued the request.
    pub const SDK_METHOD: HeaderName = HeaderName::from_static("x-sdk-method");
    /// Asks the server for 429 backpressure on `asample`.
    pub const BACKPRESSURE: HeaderName = HeaderName::from_static("x-tinker-sampling-backpressure");
    /// Poll number of a future, from 0.
    pub const ITERATION: HeaderName = HeaderName::from_static("x-tinker-request-iteration");
    /// The future's kind (`Sample`).
    pub const REQUEST_TYPE: HeaderName = HeaderName::from_static("x-tinker-request-type");
    /// Server delay in milliseconds.
    pub const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
    /// Server override of the retry decision.
    pub const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
}

/// An API key. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a key.
    pub fn new(key: &str) -> Secret {
        Secret(key.into())
    }

    /// The key itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A random `X-Idempotency-Key`, made once per logical request and reused
/// by its transport resends so the server can tell them apart from new
/// requests.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(HeaderValue);

impl IdempotencyKey {
    /// A fresh random key (128 bits, hex).
    pub fn new() -> IdempotencyKey {
        let n: u128 = rand::rng().random();
        let v = HeaderValue::from_str(&format!("tinkex-native-retry-{n:032x}"))
            .expect("hex is a valid header value");
        IdempotencyKey(v)
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Default for IdempotencyKey {
    fn default() -> Self {
        IdempotencyKey::new()
    }
}

fn retry_count_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
}

#[derive(Clone)]
struct Inner {
    limits: BodyLimits,
    clients: Arc<pool::ClientSet>,
    /// Builds requests; any client of the set can (they are sent on a
    /// leased one).
    builder: reqwest::Client,
    base_url: Box<str>,
    api_key: Secret,
    api_key_header: HeaderValue,
    user_agent: HeaderValue,
    sdk_version: Box<str>,
    sdk_version_header: HeaderValue,
    asample_url: Url,
    retrieve_future_url: Url,
}

/// A Tinker service at one base URL, used with one API key.
#[derive(Clone)]
pub struct Endpoint(Arc<Inner>);

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.0.base_url)
            .field("api_key", &self.0.api_key)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint whose `User-Agent` and `x-sdk-version` carry this crate's
    /// version. A trailing `/` of `base_url` is dropped.
    pub fn new(base_url: &str, api_key: &str) -> Result<Endpoint, Error> {
        Endpoint::with_sdk_version(base_url, api_key, env!("CARGO_PKG_VERSION"))
    }

    /// An endpoint reporting `sdk_version` (the Elixir package's version).
    pub fn with_sdk_version(
        base_url: &str,
        api_key: &str,
        sdk_version: &str,
    ) -> Result<Endpoint, Error> {
        let base = base_url.trim_end_matches('/');
        let invalid = |what: &str| Error::new(ErrorKind::Validation, what.to_owned());
        let parse = |path: &str| {
            Url::parse(&format!("{base}{path}"))
                .map_err(|e| invalid(&format!("invalid base_url {base:?}: {e}")))
        };
        let asample_url = parse("/api/v1/asample")?;
        let retrieve_future_url = parse("/api/v1/retrieve_future")?;
        let mut api_key_header = HeaderValue::from_str(api_key)
            .map_err(|_| invalid("the API key contains characters not allowed in a header"))?;
        api_key_header.set_sensitive(true);
        let user_agent = HeaderValue::from_str(&format!("TinkexNative/Elixir {sdk_version}"))
            .map_err(|_| invalid("invalid sdk_version"))?;
        let sdk_version_header =
            HeaderValue::from_str(sdk_version).map_err(|_| invalid("invalid sdk_version"))?;
        let clients = pool::ClientSet::for_base_url(base)?;
        Ok(Endpoint(Arc::new(Inner {
            limits: BodyLimits::default(),
            builder: clients.builder(),
            clients,
            base_url: base.into(),
            api_key: Secret::new(api_key),
            api_key_header,
            user_agent,
            sdk_version: sdk_version.into(),
            sdk_version_header,
            asample_url,
            retrieve_future_url,
        })))
    }

    /// The same endpoint reading answers up to `limits` (the default is
    /// [`BodyLimits::default`]). The connection pool stays shared.
    ///
    /// ```
    /// use tinkex_core::http::{BodyLimits, Endpoint};
    /// let ep = Endpoint::new("http://127.0.0.1:1", "tml-k").unwrap();
    /// assert_eq!(ep.body_limits().control, 1 << 20);
    /// let ep = ep.with_body_limits(BodyLimits { result: 4096, control: 512 });
    /// assert_eq!(ep.body_limits().result, 4096);
    /// ```
    pub fn with_body_limits(&self, limits: BodyLimits) -> Endpoint {
        let mut inner = Inner::clone(&self.0);
        inner.limits = limits;
        Endpoint(Arc::new(inner))
    }

    /// The largest answer bodies this endpoint reads.
    pub fn body_limits(&self) -> BodyLimits {
        self.0.limits
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.0.base_url
    }

    /// The API key (redacted when printed).
    pub fn api_key(&self) -> &Secret {
        &self.0.api_key
    }

    /// The version this client reports.
    pub fn sdk_version(&self) -> &str {
        &self.0.sdk_version
    }

    pub(crate) fn asample_url(&self) -> &Url {
        &self.0.asample_url
    }

    pub(crate) fn retrieve_future_url(&self) -> &Url {
        &self.0.retrieve_future_url
    }

    /// A request to `base_url + path` with the common headers: API key,
    /// JSON content type, user agent, idempotency key and retry count.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        key: &IdempotencyKey,
        retry_count: u32,
    ) -> RequestBuilder {
        let url = format!("{}{path}", self.0.base_url);
        self.with_common(self.0.builder.request(method, url), key, retry_count)
    }

    /// A request to a prepared URL with the common headers.
    pub fn request_url(
        &self,
        method: Method,
        url: Url,
        key: &IdempotencyKey,
        retry_count: u32,
    ) -> RequestBuilder {
        self.with_common(self.0.builder.request(method, url), key, retry_count)
    }

    /// `base_url + path` followed by `segments`, each percent-encoded as
    /// one path segment (an id with a `/` stays one segment).
    pub fn url(&self, path: &str, segments: &[&str]) -> Result<Url, Error> {
        let mut url = Url::parse(&format!("{}{path}", self.0.base_url))
            .map_err(|e| Error::new(ErrorKind::Validation, format!("invalid URL: {e}")))?;
        if !segments.is_empty() {
            url.path_segments_mut()
                .map_err(|_| Error::new(ErrorKind::Validation, "base_url cannot have a path"))?
                .extend(segments);
        }
        Ok(url)
    }

    /// A `POST` to a prepared URL with the common headers.
    pub(crate) fn post_url(&self, url: &Url, key: &IdempotencyKey, retry: u32) -> RequestBuilder {
        self.with_common(self.0.builder.post(url.clone()), key, retry)
    }

    /// The `x-sdk-version` / `x-sdk-method` pair of a public SDK method.
    pub(crate) fn sdk_headers(&self, rb: RequestBuilder, method: &'static str) -> RequestBuilder {
        rb.header(names::SDK_VERSION, self.0.sdk_version_header.clone())
            .header(names::SDK_METHOD, HeaderValue::from_static(method))
    }

    fn with_common(&self, rb: RequestBuilder, key: &IdempotencyKey, retry: u32) -> RequestBuilder {
        rb.header(names::API_KEY, self.0.api_key_header.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, self.0.user_agent.clone())
            .header(names::IDEMPOTENCY_KEY, key.0.clone())
            .header(names::RETRY_COUNT, retry_count_value(retry))
    }

    /// Sends a request and reads the whole answer, whatever its status.
    /// Fails when no complete answer arrived (kind `Transport` or
    /// `Timeout`), and when a success's body is over the limit of its
    /// [`BodyClass`] (kind `Decode`, never read into memory; see
    /// [`BodyLimits`]).
    pub async fn send(&self, rb: RequestBuilder) -> Result<Reply, Error> {
        let req = rb
            .build()
            .map_err(|e| Error::new(ErrorKind::Internal, format!("building a request: {e}")))?;
        let class = BodyClass::of(req.url());
        let limit = self.0.limits.of(class);
        let path = req.url().path().to_owned();
        // Held until the body is read: the stream counts until then.
        let lease = self.0.clients.lease()?;
        let resp = lease.client().execute(req).await.map_err(transport_error)?;
        let reply = reply::read(resp, limit, class, &path).await;
        drop(lease);
        reply
    }
}

/// Maps a `reqwest` failure (no complete answer) to an [`Error`]. The
/// message names the URL and the cause, never a header.
pub fn transport_error(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::new(ErrorKind::Timeout, "Request timed out.");
    }
    let mut msg = format!("Connection error: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Error::new(ErrorKind::Transport, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_secrets() {
        let s = Secret::new("tml-abc");
        assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
        assert_eq!(s.expose(), "tml-abc");
        let a = IdempotencyKey::new();
        assert_ne!(a.as_str(), IdempotencyKey::new().as_str());
        assert_eq!(retry_count_value(3), "3");
        assert_eq!(retry_count_value(12), "12");
    }

    #[test]
    fn endpoint_validation() {
        assert!(Endpoint::new("not a url", "tml-k").is_err());
        let e = Endpoint::new("http://x.test", "bad\nkey").unwrap_err();
        assert!(!e.message.contains("bad"));
        let ep = Endpoint::with_sdk_version("http://x.test/", "tml-k", "9.9").unwrap();
        assert_eq!(ep.asample_url().as_str(), "http://x.test/api/v1/asample");
        assert_eq!(ep.sdk_version(), "9.9");
        let u = ep.url("/api/v1/samplers", &["a/b:c"]).unwrap();
        assert_eq!(u.as_str(), "http://x.test/api/v1/samplers/a%2Fb:c");
    }
}
