//! The HTTP side of the example apps: the server loop ([`serve`]), over HTTPS when given
//! an [`HttpsConfig`] ([`tls`]), the [`Handler`] it calls, JSON answers and path helpers;
//! errors in [`error`], the admin token check in [`admin`], the socket adapter and
//! hyper's timers in [`hyper_io`].
//!
//! One code path serves both runtimes: connections come from
//! [`raft_net_tcp::TcpRuntime::accept`]
//! (a `futures::io` stream on tokio and on smol alike) and each one is served by hyper's
//! HTTP/1 server in a task of its own.

pub mod admin;
pub mod error;
pub mod hyper_io;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::Either;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use raft::runtime::DynClock;
use raft::Runtime;
use tracing::{debug, warn};

pub use self::admin::{check_admin, is_admin_request, AdminToken};
pub use self::error::ApiError;
pub use self::hyper_io::{HttpRuntime, HyperIo};
pub use self::tls::HttpsConfig;

/// The response type of every handler.
pub type HttpResponse = Response<Full<Bytes>>;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response with `value` as its JSON body.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> HttpResponse {
    // Serializing plain data into a Vec cannot fail.
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A 200 response with `value` as its JSON body.
pub fn json_ok(value: &impl serde::Serialize) -> HttpResponse {
    json_response(StatusCode::OK, value)
}

/// A 200 response with raw bytes as its body.
pub fn bytes_ok(body: Bytes) -> HttpResponse {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r
}

/// A 200 response with `body` in the OpenMetrics text format, which Prometheus scrapes.
pub fn metrics_ok(body: String) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    r
}

/// Whether the query string holds the flag `name` (`name`, `name=`, `name=1` or
/// `name=true`; `name=0` and `name=false` turn it off).
pub fn query_flag(query: Option<&str>, name: &str) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k == name && !matches!(v, "0" | "false")
    })
}

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key` header (the name of the IETF draft
/// "The Idempotency-Key HTTP Header Field"), scoped to the request's method and path, as
/// the key [`raft::Raft::propose_once`] takes: a write repeated with the same key on the
/// same resource is applied once and gets the first answer. `None` without the header;
/// a 400 for an empty, over-long or non-visible-ASCII value, or for the header given
/// twice.
pub fn idempotency_key(request: &hyper::Request<bytes::Bytes>) -> Result<Option<Vec<u8>>, ApiError> {
    let mut values = request.headers().get_all("idempotency-key").iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(ApiError::BadRequest("more than one Idempotency-Key header".into()));
    }
    let raw = value.as_bytes();
    // The draft's value is a structured-field string: quoted; a bare token is taken too.
    let key = raw.strip_prefix(b"\"").and_then(|k| k.strip_suffix(b"\"")).unwrap_or(raw);
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
    {
        return Err(ApiError::BadRequest(format!(
            "the Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        )));
    }
    let mut scoped = Vec::with_capacity(key.len() + request.uri().path().len() + 8);
    scoped.extend_from_slice(request.method().as_str().as_bytes());
    scoped.push(b' ');
    scoped.extend_from_slice(request.uri().path().as_bytes());
    scoped.push(b' ');
    scoped.extend_from_slice(key);
    Ok(Some(scoped))
}

/// Percent-decodes one path segment (or the rest of a path) into a string; invalid
/// UTF-8 after decoding is a 400.
pub fn decode_path(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadRequest("the path is not valid UTF-8 after percent-decoding".into()))
}

/// A method-not-allowed error naming the methods that are.
pub fn method_not_allowed(method: &hyper::Method, path: &str, allowed: &str) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {path}; use {allowed}"))
}

/// A not-found error for `path`.
pub fn not_found(path: &str) -> ApiError {
    ApiError::NotFound(format!("no such resource: {path}"))
}

/// Something that answers HTTP requests whose body has been read in full.
pub trait Handler: Send + Sync + 'static {
    /// The most body bytes read for a request with these method, path and headers; a
    /// longer body is answered with 413 before `handle` is called.
    fn max_body_size(&self, request: &hyper::http::request::Parts) -> usize;

    /// How long reading a request's body may take (408 after that).
    fn body_timeout(&self) -> Duration;

    /// Answers one request.
    fn handle(self: Arc<Self>, request: Request<Bytes>) -> impl Future<Output = HttpResponse> + Send;
}

/// How many bytes of a body beyond the limit are still read (and dropped) before the
/// 413 answer, so that a client that sends its whole body first still reads the answer
/// instead of a reset connection.
pub const DRAIN_LIMIT: usize = 8 << 20;

/// Reads a whole body of at most `limit` bytes; a longer one is drained (up to
/// [`DRAIN_LIMIT`] more bytes) and refused with 413.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    // A body that arrives as one frame (the common case) is passed on without a copy.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total <= limit {
                if first.is_none() && buf.is_empty() {
                    first = Some(data);
                } else {
                    if let Some(f) = first.take() {
                        buf.extend_from_slice(&f);
                    }
                    buf.extend_from_slice(&data);
                }
            } else if total > limit.saturating_add(DRAIN_LIMIT) {
                break;
            }
        }
    }
    if total > limit {
        return Err(ApiError::TooLarge(format!("the request body is larger than {limit} bytes")));
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// Reads the body of `request` (see [`read_body`]) within `handler.body_timeout()` on
/// `clock`, then lets `handler` answer it.
async fn answer<H: Handler>(handler: Arc<H>, clock: &dyn DynClock, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let limit = handler.max_body_size(&parts);
    let declared = hyper::body::Body::size_hint(&body).lower();
    if declared > limit.saturating_add(DRAIN_LIMIT) as u64 {
        // Far too large to drain: refused without reading the body.
        return ApiError::TooLarge(format!("the request body ({declared} bytes) is larger than {limit} bytes"))
            .into_response();
    }
    let read = read_body(body, limit);
    futures::pin_mut!(read);
    // A body that is already here needs no timer.
    let read = match futures::poll!(read.as_mut()) {
        Poll::Ready(r) => r,
        Poll::Pending => match futures::future::select(read, clock.sleep(handler.body_timeout())).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => {
                return ApiError::RequestTimeout("the request body did not arrive in time".into()).into_response();
            }
        },
    };
    let body = match read {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    handler.handle(Request::from_parts(parts, body)).await
}

/// Serves HTTP/1 on `listener` until `stop` completes: each connection is served in a
/// task of its own, and each request by `handler`. With `tls`, every connection starts
/// with a TLS handshake (HTTPS); one that fails or takes longer than
/// [`tls::TLS_HANDSHAKE_TIMEOUT`] is closed.
pub async fn serve<R: HttpRuntime, H: Handler>(
    rt: R,
    listener: R::Listener,
    handler: Arc<H>,
    tls: Option<HttpsConfig>,
    stop: impl Future<Output = ()>,
) {
    futures::pin_mut!(stop);
    loop {
        let accepted = {
            let accept = R::accept(&listener);
            match futures::future::select(accept, stop.as_mut()).await {
                Either::Left((a, _)) => a,
                Either::Right(_) => return,
            }
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically out of file descriptors: wait a little rather than spin.
                warn!(error = %e, "accepting an HTTP connection failed");
                Runtime::sleep(&rt, Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let clock: Arc<dyn DynClock> = Arc::new(rt.clone());
        let timer = rt.hyper_timer();
        let tls = tls.clone();
        drop(rt.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, peer, handler, clock, timer).await;
            };
            let handshake = tls.accept(stream);
            futures::pin_mut!(handshake);
            match futures::future::select(handshake, clock.sleep(tls::TLS_HANDSHAKE_TIMEOUT)).await {
                Either::Left((Ok(stream), _)) => serve_connection(stream, peer, handler, clock, timer).await,
                Either::Left((Err(e), _)) => debug!(%peer, error = %e, "HTTPS handshake failed"),
                Either::Right(_) => debug!(%peer, "HTTPS handshake timed out"),
            }
        }));
    }
}

/// Serves the requests of one connection (plaintext or TLS) with hyper.
async fn serve_connection<H: Handler, S: futures::io::AsyncRead + futures::io::AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: std::net::SocketAddr,
    handler: Arc<H>,
    clock: Arc<dyn DynClock>,
    timer: impl hyper::rt::Timer + Send + Sync + 'static,
) {
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        let clock = clock.clone();
        async move { Ok::<_, Infallible>(answer(handler, &*clock, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(timer)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(HyperIo::new(stream), service);
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "tokio")]
    use raft_net_tcp::TcpRuntime;

    use super::*;

    #[test]
    fn idempotency_keys_are_scoped_to_the_resource_and_checked() {
        let req = |method: &str, path: &str, keys: &[&str]| {
            let mut b = hyper::Request::builder().method(method).uri(path);
            for k in keys {
                // Built from bytes, so that the test can send what a client may: any
                // octet but a control character.
                b = b.header("Idempotency-Key", hyper::header::HeaderValue::from_bytes(k.as_bytes()).unwrap());
            }
            b.body(bytes::Bytes::new()).unwrap()
        };
        assert_eq!(idempotency_key(&req("PUT", "/kv/a", &[])).unwrap(), None);
        let a = idempotency_key(&req("PUT", "/kv/a", &["\"k-1\""])).unwrap().unwrap();
        assert_eq!(a, b"PUT /kv/a k-1");
        assert_eq!(idempotency_key(&req("PUT", "/kv/a", &["k-1"])).unwrap(), Some(a.clone()), "quoted or bare");
        assert_ne!(idempotency_key(&req("DELETE", "/kv/a", &["k-1"])).unwrap(), Some(a.clone()));
        assert_ne!(idempotency_key(&req("PUT", "/kv/b", &["k-1"])).unwrap(), Some(a));
        for bad in [&["\"\""][..], &[""], &["a", "b"], &["caf\u{e9}"]] {
            assert!(matches!(idempotency_key(&req("PUT", "/kv/a", bad)), Err(ApiError::BadRequest(_))), "{bad:?}");
        }
        let long = "x".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        assert!(idempotency_key(&req("PUT", "/kv/a", &[long.as_str()])).is_err());
    }

    #[test]
    fn query_flags() {
        assert!(query_flag(Some("stale"), "stale"));
        assert!(query_flag(Some("a=1&stale="), "stale"));
        assert!(query_flag(Some("stale=true"), "stale"));
        assert!(!query_flag(Some("stale=false"), "stale"));
        assert!(!query_flag(Some("stale=0"), "stale"));
        assert!(!query_flag(Some("stalemate"), "stale"));
        assert!(!query_flag(None, "stale"));
    }

    #[test]
    fn paths_are_percent_decoded_and_must_be_utf8() {
        assert_eq!(decode_path("a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(decode_path("%D0%BA").unwrap(), "к");
        assert!(matches!(decode_path("%ff%fe"), Err(ApiError::BadRequest(_))));
    }

    /// Echoes the body's length; reading a body may take 200 ms.
    #[cfg(feature = "tokio")]
    struct LenHandler;

    #[cfg(feature = "tokio")]
    impl Handler for LenHandler {
        fn max_body_size(&self, _: &hyper::http::request::Parts) -> usize {
            1 << 20
        }

        fn body_timeout(&self) -> Duration {
            Duration::from_millis(200)
        }

        async fn handle(self: Arc<Self>, request: Request<Bytes>) -> HttpResponse {
            json_ok(&serde_json::json!({ "len": request.body().len() }))
        }
    }

    /// Sends `head`, then each of `later` after `pause`, and returns the answer's text.
    #[cfg(feature = "tokio")]
    async fn exchange(addr: std::net::SocketAddr, head: &[u8], later: &[&[u8]], pause: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head).await.unwrap();
        for part in later {
            tokio::time::sleep(pause).await;
            if s.write_all(part).await.is_err() {
                break;
            }
        }
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn bodies_are_read_at_once_late_or_not_in_time() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let runtime = raft::runtime::TokioRuntime::new();
            let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = <raft::runtime::TokioRuntime as TcpRuntime>::local_addr(&listener).unwrap();
            tokio::spawn(serve(runtime, listener, Arc::new(LenHandler), None, futures::future::pending()));
            let head = b"PUT /x HTTP/1.1\r\nhost: t\r\ncontent-length: 6\r\n\r\n";
            // The whole body with the head: answered without waiting.
            let whole = [&head[..], b"abcdef"].concat();
            let r = exchange(addr, &whole, &[], Duration::ZERO).await;
            assert!(r.starts_with("HTTP/1.1 200") && r.contains(r#"{"len":6}"#), "{r}");
            // The body in two late pieces, within the body timeout.
            let r = exchange(addr, head, &[b"abc", b"def"], Duration::from_millis(30)).await;
            assert!(r.starts_with("HTTP/1.1 200") && r.contains(r#"{"len":6}"#), "{r}");
            // Half the body, then nothing: 408 once the body timeout passes.
            let r = exchange(addr, head, &[b"abc"], Duration::from_millis(10)).await;
            assert!(r.starts_with("HTTP/1.1 408"), "{r}");
            assert!(r.contains("did not arrive in time"), "{r}");
        });
    }

    #[test]
    fn errors_have_their_status_and_a_json_body() {
        let r = ApiError::TooLarge("big".into()).into_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let e: ApiError = raft::ClientError::NotLeader { leader: None }.into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e: ApiError = raft::ClientError::Encode("x".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let e: ApiError = raft::ClientError::KeyReused { client: 1 }.into();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
