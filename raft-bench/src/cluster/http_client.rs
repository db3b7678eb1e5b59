//! A lean keep-alive HTTP/1.1 client connection for the load generator.
//!
//! One request at a time: the request is written with one write call from a reused
//! buffer, the response is read into a reused buffer and its head is parsed with
//! `httparse`. Bodies delimited by `Content-Length`, by the chunked transfer coding, or
//! by the end of the connection are read whole. After a response that ends the
//! connection (`Connection: close`, a body delimited by the close, an HTTP/1.0 response
//! without keep-alive) or after any error, the connection is not reused
//! ([`Conn::is_reusable`]).

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head (status line and header fields) and the largest trailer
/// section accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest response body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Header fields accepted in one response head or trailer section.
const MAX_HEADERS: usize = 64;
/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Initial size of the read buffer, and the least it grows by.
const READ_BUF: usize = 16 * 1024;
/// Buffers grown past this by a large response are shrunk back before the next request.
const KEEP_BUF: usize = 1024 * 1024;

/// One keep-alive HTTP/1.1 connection to one node; one request at a time.
pub struct Conn {
    stream: TcpStream,
    host: String,
    /// The request being sent.
    out: Vec<u8>,
    /// Received bytes; `buf[start..end]` are not consumed yet. Always initialized, so
    /// reads go straight into it.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The decoded body of a chunked response.
    chunked: Vec<u8>,
    /// Whether the next request may be sent on this connection.
    reusable: bool,
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (204 and 304 responses).
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// The chunked transfer coding.
    Chunked,
    /// Everything up to the end of the connection.
    UntilClose,
}

/// What the client needs from a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    status: StatusCode,
    framing: Framing,
    keep_alive: bool,
}

/// Where the body of the last response is.
enum Body {
    InBuf(Range<usize>),
    Chunked,
}

impl Conn {
    /// Opens a connection to `addr` (TCP_NODELAY set).
    pub async fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        Ok(Conn {
            stream,
            host: addr.to_string(),
            out: Vec::with_capacity(2048),
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            chunked: Vec::new(),
            reusable: true,
        })
    }

    /// The value of the `Host` header for requests on this connection.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether another request may be sent: false after a response that ended the
    /// connection and after any error (including a send that was dropped unfinished).
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Sends the request that `write` puts into the (empty) buffer it is given, with this
    /// connection's `Host` value, and reads the whole response: its status and body.
    ///
    /// `write` must produce one complete HTTP/1.1 request; it goes out with one write call.
    pub async fn send(&mut self, write: impl FnOnce(&str, &mut Vec<u8>)) -> Result<(StatusCode, &[u8]), String> {
        if !self.reusable {
            return Err("connection closed: not reusable after the previous response".to_string());
        }
        self.recycle();
        write(&self.host, &mut self.out);
        // Until the response is read whole, the connection is in an unknown state.
        self.reusable = false;
        self.stream.write_all(&self.out).await.map_err(|e| format!("request failed: {e}"))?;
        let head = self.read_head().await?;
        let body = match head.framing {
            Framing::Empty => Body::InBuf(self.start..self.start),
            Framing::Length(n) => self.read_length(n).await?,
            Framing::Chunked => self.read_chunked().await?,
            Framing::UntilClose => self.read_until_close().await?,
        };
        self.reusable = head.keep_alive && head.framing != Framing::UntilClose;
        let body = match body {
            Body::InBuf(range) => &self.buf[range],
            Body::Chunked => &self.chunked[..],
        };
        Ok((head.status, body))
    }

    /// Empties the request buffer and rewinds the read buffer when everything in it was
    /// consumed; bytes not consumed yet stay for the next response.
    fn recycle(&mut self) {
        self.out.clear();
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > KEEP_BUF {
                self.buf = vec![0; READ_BUF];
            }
        }
        if self.chunked.capacity() > KEEP_BUF {
            self.chunked = Vec::new();
        }
    }

    /// Makes `buf[start..]` at least `need` bytes long (moving the unconsumed bytes to
    /// the front, then growing).
    fn reserve(&mut self, need: usize) {
        if self.buf.len() - self.start >= need {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
    }

    /// Reads more bytes into the buffer; 0 at the end of the connection.
    async fn fill(&mut self) -> Result<usize, String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            let pending = self.end - self.start;
            self.reserve(pending + pending.max(READ_BUF));
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await.map_err(|e| format!("reading the response: {e}"))?;
        self.end += n;
        Ok(n)
    }

    /// Like [`Conn::fill`], but the end of the connection is an error (`while` says where).
    async fn more(&mut self, while_: &str) -> Result<(), String> {
        match self.fill().await? {
            0 => Err(format!("connection closed by the server {while_}")),
            _ => Ok(()),
        }
    }

    /// Reads and consumes the response head, skipping interim (1xx) responses.
    async fn read_head(&mut self) -> Result<Head, String> {
        loop {
            if self.start < self.end {
                if let Some((len, head)) = parse_head(&self.buf[self.start..self.end])? {
                    self.start += len;
                    match head.status.as_u16() {
                        101 => return Err("unexpected 101 Switching Protocols".to_string()),
                        100..=199 => continue,
                        _ => return Ok(head),
                    }
                }
                if self.end - self.start >= MAX_HEAD {
                    return Err(format!("response head over {MAX_HEAD} bytes"));
                }
            }
            let what = if self.start == self.end { "before the response" } else { "in the response head" };
            self.more(what).await?;
        }
    }

    async fn read_length(&mut self, n: usize) -> Result<Body, String> {
        self.reserve(n);
        while self.end - self.start < n {
            self.more("in the response body").await?;
        }
        let body = self.start..self.start + n;
        self.start += n;
        Ok(Body::InBuf(body))
    }

    async fn read_chunked(&mut self) -> Result<Body, String> {
        self.chunked.clear();
        loop {
            let size = self.read_chunk_size().await?;
            if size == 0 {
                break;
            }
            let mut left = usize::try_from(size)
                .ok()
                .filter(|&s| s <= MAX_BODY - self.chunked.len())
                .ok_or_else(|| format!("response body over {MAX_BODY} bytes"))?;
            while left > 0 {
                if self.start == self.end {
                    self.more("in a chunk").await?;
                }
                let take = left.min(self.end - self.start);
                self.chunked.extend_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                left -= take;
            }
            while self.end - self.start < 2 {
                self.more("after a chunk").await?;
            }
            if &self.buf[self.start..self.start + 2] != b"\r\n" {
                return Err("chunk data not followed by CRLF".to_string());
            }
            self.start += 2;
        }
        // The trailer section: header fields up to an empty line, ignored.
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&self.buf[self.start..self.end], &mut fields) {
                Ok(httparse::Status::Complete((len, _))) => {
                    self.start += len;
                    return Ok(Body::Chunked);
                }
                Ok(httparse::Status::Partial) if self.end - self.start >= MAX_HEAD => {
                    return Err(format!("trailer section over {MAX_HEAD} bytes"));
                }
                Ok(httparse::Status::Partial) => self.more("in the trailer section").await?,
                Err(e) => return Err(format!("bad trailer section: {e}")),
            }
        }
    }

    /// Reads and consumes one chunk-size line (extensions ignored).
    async fn read_chunk_size(&mut self) -> Result<u64, String> {
        loop {
            let line = &self.buf[self.start..self.end];
            // httparse takes an empty size as 0; a size has at least one digit.
            if line.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                return Err("bad chunk size".to_string());
            }
            match httparse::parse_chunk_size(line) {
                Ok(httparse::Status::Complete((len, size))) => {
                    self.start += len;
                    return Ok(size);
                }
                Ok(httparse::Status::Partial) if line.len() >= MAX_CHUNK_LINE => {
                    return Err(format!("chunk size line over {MAX_CHUNK_LINE} bytes"));
                }
                Ok(httparse::Status::Partial) => self.more("in a chunk size").await?,
                Err(_) => return Err("bad chunk size".to_string()),
            }
        }
    }

    async fn read_until_close(&mut self) -> Result<Body, String> {
        loop {
            if self.end - self.start > MAX_BODY {
                return Err(format!("response body over {MAX_BODY} bytes"));
            }
            if self.fill().await? == 0 {
                let body = self.start..self.end;
                self.start = self.end;
                return Ok(Body::InBuf(body));
            }
        }
    }
}

/// Parses a response head at the start of `bytes`: `None` while incomplete, else its
/// length and what it says.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, Head)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad status code {code}"))?;
    let http11 = resp.version == Some(1);
    let (mut close, mut keep_alive) = (false, false);
    let mut length: Option<usize> = None;
    let mut encoded = None;
    for field in resp.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            for value in field.value.split(|&b| b == b',') {
                let n = parse_length(value)?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values".to_string());
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding of the last field decides whether the body is chunked.
            let last = field.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            encoded = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let mut keep_alive = !close && (http11 || keep_alive);
    let framing = match (status.as_u16(), encoded, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, Some(chunked), length) => {
            // Both framings at once: the coding wins, and the connection is not trusted
            // for another request.
            keep_alive &= length.is_none();
            if chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        }
        (_, None, Some(n)) if n > MAX_BODY => return Err(format!("response body over {MAX_BODY} bytes")),
        (_, None, Some(n)) => Framing::Length(n),
        (_, None, None) => Framing::UntilClose,
    };
    Ok(Some((len, Head { status, framing, keep_alive })))
}

/// One Content-Length value: decimal digits, optional whitespace around them.
fn parse_length(value: &[u8]) -> Result<usize, String> {
    let digits = trim(value);
    let bad = || format!("bad Content-Length {:?}", String::from_utf8_lossy(value));
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    digits.iter().try_fold(0usize, |n, &d| n.checked_mul(10)?.checked_add(usize::from(d - b'0'))).ok_or_else(bad)
}

fn trim(s: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let from = s.iter().position(|b| !is_space(b)).unwrap_or(s.len());
    let to = s.iter().rposition(|b| !is_space(b)).map_or(from, |i| i + 1);
    &s[from..to]
}

/// Connects to `addr`, sends the request that `write` makes for that host (see
/// [`Conn::send`]), and reads the response, all within `timeout`.
pub async fn one_shot(
    addr: SocketAddr,
    timeout: Duration,
    write: impl FnOnce(&str, &mut Vec<u8>),
) -> Result<(StatusCode, Bytes), String> {
    let work = async {
        let mut conn = Conn::connect(addr).await?;
        let (status, body) = conn.send(write).await?;
        Ok((status, Bytes::copy_from_slice(body)))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("{addr}: no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn run<T>(work: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(work)
    }

    /// A server for one connection: for each reply, it reads one request (head and
    /// `content-length` body) and writes the reply's pieces one write each, yielding in
    /// between; then it closes the connection. Returns its address and a handle that
    /// yields the requests it read.
    async fn serve(replies: Vec<Vec<Vec<u8>>>) -> (SocketAddr, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut pending = Vec::new();
            let mut requests = Vec::new();
            for pieces in replies {
                let len = loop {
                    let mut fields = [httparse::EMPTY_HEADER; 16];
                    let mut req = httparse::Request::new(&mut fields);
                    if let httparse::Status::Complete(head) = req.parse(&pending).unwrap() {
                        let body = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse::<usize>().unwrap());
                        if pending.len() >= head + body {
                            break head + body;
                        }
                    }
                    let mut buf = [0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "client closed before its request was complete");
                    pending.extend_from_slice(&buf[..n]);
                };
                requests.push(pending.drain(..len).collect());
                for piece in pieces {
                    if s.write_all(&piece).await.is_err() {
                        return requests;
                    }
                    tokio::task::yield_now().await;
                }
            }
            requests
        });
        (addr, server)
    }

    /// A reply written in one piece.
    fn whole(reply: &[u8]) -> Vec<Vec<u8>> {
        vec![reply.to_vec()]
    }

    /// A reply written one byte at a time.
    fn bytewise(reply: &[u8]) -> Vec<Vec<u8>> {
        reply.iter().map(|&b| vec![b]).collect()
    }

    fn get(path: &str) -> impl FnOnce(&str, &mut Vec<u8>) + '_ {
        move |host, out| out.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
    }

    fn put(body: &str) -> impl FnOnce(&str, &mut Vec<u8>) + '_ {
        move |host, out| {
            let head = format!("PUT /kv/k HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n", body.len());
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(body.as_bytes());
        }
    }

    /// One answer as a test sees it (status and body, or the error), and whether the
    /// connection was reusable after it.
    type Answer = (Result<(u16, String), String>, bool);

    /// Sends `requests` on one connection to a server giving `replies`.
    fn exchange(replies: Vec<Vec<Vec<u8>>>, requests: usize) -> Vec<Answer> {
        run(async {
            let (addr, _server) = serve(replies).await;
            let mut conn = Conn::connect(addr).await.unwrap();
            let mut out = Vec::new();
            for _ in 0..requests {
                let answer = conn
                    .send(get("/x"))
                    .await
                    .map(|(status, body)| (status.as_u16(), String::from_utf8_lossy(body).into_owned()));
                out.push((answer, conn.is_reusable()));
            }
            out
        })
    }

    fn ok(status: u16, body: &str) -> Answer {
        (Ok((status, body.to_string())), true)
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        4\r\nWiki\r\n6;name=value;other\r\npedia \r\nD \t; quoted=\"a;b\"\r\nin\r\n\r\nchunks.\r\n\
        0\r\nExpires: never\r\nX-Checksum: 1\r\n\r\n";
    const CHUNKED_BODY: &str = "Wikipedia in\r\n\r\nchunks.";

    #[test]
    fn content_length_responses_reuse_the_connection() {
        run(async {
            let (addr, server) = serve(vec![
                whole(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
                whole(b"HTTP/1.1 404 Not Found\r\nContent-Length:  9 \r\nServer: test\r\n\r\nno such k"),
                whole(b"HTTP/1.1 204 No Content\r\n\r\n"),
            ])
            .await;
            let mut conn = Conn::connect(addr).await.unwrap();
            let host = conn.host().to_string();
            assert_eq!(host, addr.to_string());
            let (s, body) = conn.send(put("value")).await.unwrap();
            assert_eq!((s, body), (StatusCode::OK, &b"hello"[..]));
            let (s, body) = conn.send(get("/kv/k")).await.unwrap();
            assert_eq!((s, body), (StatusCode::NOT_FOUND, &b"no such k"[..]));
            let (s, body) = conn.send(get("/kv/k")).await.unwrap();
            assert_eq!((s, body), (StatusCode::NO_CONTENT, &b""[..]));
            assert!(conn.is_reusable());
            let requests = server.await.unwrap();
            let put = format!("PUT /kv/k HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\n\r\nvalue");
            assert_eq!(requests[0], put.as_bytes(), "the request goes out as written");
            assert_eq!(requests.len(), 3);
        });
    }

    #[test]
    fn chunked_responses_with_extensions_and_trailers() {
        let replies =
            vec![whole(CHUNKED), whole(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n")];
        assert_eq!(exchange(replies, 2), vec![ok(200, CHUNKED_BODY), ok(200, "")]);
    }

    #[test]
    fn responses_split_byte_by_byte() {
        let replies = vec![
            bytewise(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello, world"),
            bytewise(CHUNKED),
            bytewise(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
        ];
        assert_eq!(exchange(replies, 3), vec![ok(200, "hello, world"), ok(200, CHUNKED_BODY), ok(201, "ok")]);
    }

    #[test]
    fn bytes_after_a_response_are_kept_for_the_next() {
        // Two answers in one write (a server may not do that, but nothing is lost).
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\noneHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo";
        assert_eq!(exchange(vec![whole(two), vec![]], 2), vec![ok(200, "one"), ok(200, "two")]);
    }

    #[test]
    fn connection_close_ends_reuse() {
        let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye";
        let answers = exchange(vec![whole(close)], 2);
        assert_eq!(answers[0], (Ok((200, "bye".to_string())), false));
        assert!(answers[1].0.as_ref().is_err_and(|e| e.contains("not reusable")), "{answers:?}");
        // A body delimited by the end of the connection, and HTTP/1.0 without keep-alive.
        let until_close = b"HTTP/1.1 200 OK\r\n\r\nto the end";
        assert_eq!(exchange(vec![bytewise(until_close)], 1), vec![(Ok((200, "to the end".to_string())), false)]);
        let http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(exchange(vec![whole(http10)], 1), vec![(Ok((200, "ok".to_string())), false)]);
        let keep = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(exchange(vec![whole(keep)], 1), vec![ok(200, "ok")]);
    }

    fn error_of(reply: &[u8]) -> String {
        let answers = exchange(vec![whole(reply)], 1);
        assert!(!answers[0].1, "an error leaves the connection unusable");
        match &answers[0].0 {
            Err(e) => e.clone(),
            Ok(answer) => panic!("{answer:?} from {:?}", String::from_utf8_lossy(reply)),
        }
    }

    #[test]
    fn a_connection_closed_early_is_an_error() {
        assert!(error_of(b"").contains("before the response"));
        assert!(error_of(b"HTTP/1.1 200 OK\r\nContent-Le").contains("in the response head"));
        assert!(error_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").contains("in the response body"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(error_of(&[chunked, &b"5\r\nab"[..]].concat()).contains("in a chunk"));
        assert!(error_of(&[chunked, &b"2\r\nab\r\n0\r\n"[..]].concat()).contains("trailer"));
    }

    #[test]
    fn malformed_responses_are_errors() {
        for head in [
            &b"HTTP/1.1 2OO OK\r\n\r\n"[..],
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"hello\r\n\r\n",
        ] {
            assert!(error_of(head).contains("bad"), "{:?}", String::from_utf8_lossy(head));
        }
        for (reply, error) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..], "bad Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", "bad Content-Length"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "conflicting"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 67108865\r\n\r\n", "over 67108864"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n12345678901234567\r\n", "bad chunk size"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4000001\r\n", "over 67108864"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "not followed by CRLF"),
            (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101"),
        ] {
            let e = error_of(reply);
            assert!(e.contains(error), "{e:?} for {:?}", String::from_utf8_lossy(reply));
        }
    }

    #[test]
    fn oversized_heads_are_errors() {
        let mut long = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        long.resize(long.len() + MAX_HEAD, b'a');
        long.extend_from_slice(b"\r\n\r\n");
        assert!(error_of(&long).contains("response head over"));
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let e = error_of(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes());
        assert!(e.contains("bad response head"), "{e}");
        let mut trailer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Long: ".to_vec();
        trailer.resize(trailer.len() + MAX_HEAD, b'a');
        assert!(error_of(&trailer).contains("trailer section over"));
        let mut ext = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        ext.resize(ext.len() + MAX_CHUNK_LINE, b'a');
        assert!(error_of(&ext).contains("chunk size line over"));
    }

    #[test]
    fn large_bodies_grow_the_buffer_and_shrink_it_after() {
        let body: String = (0..3 * KEEP_BUF).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let by_length = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in body.as_bytes().chunks(100_000) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let replies =
            vec![whole(by_length.as_bytes()), whole(&chunked), whole(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n.")];
        let answers = exchange(replies, 3);
        assert_eq!(answers, vec![ok(200, &body), ok(200, &body), ok(200, ".")]);
    }

    #[test]
    fn one_shot_sends_one_request() {
        run(async {
            let (addr, server) = serve(vec![whole(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")]).await;
            let (status, body) = one_shot(addr, Duration::from_secs(5), get("/status")).await.unwrap();
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"{}"[..]));
            assert_eq!(server.await.unwrap()[0], format!("GET /status HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes());
            // Nobody listens on a port just released.
            let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
            assert!(one_shot(gone, Duration::from_secs(5), get("/")).await.is_err());
        });
    }
}
