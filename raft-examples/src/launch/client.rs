//! A small blocking HTTP/1.1 client for the launcher: one request per connection
//! (`Connection: close`), enough to poll `/status` and to drive an app in the process
//! tests, without an HTTP client crate in the apps' dependencies. With an
//! [`HttpsTrust`], it speaks HTTPS (rustls) and verifies the server against that CA.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The CA certificates an HTTPS client trusts (TLS 1.3, rustls's ring provider).
#[derive(Clone)]
pub struct HttpsTrust {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for HttpsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTrust").finish_non_exhaustive()
    }
}

impl HttpsTrust {
    /// Trusts the CA certificates in `pem`.
    pub fn from_ca_pem(pem: &[u8]) -> Result<HttpsTrust, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("malformed CA PEM: {e}"))?;
            roots.add(cert).map_err(|e| format!("unusable CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate in the PEM".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS 1.3: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpsTrust { config: Arc::new(config) })
    }
}

/// A connection: plaintext, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Plain",
            Stream::Tls(_) => "Tls",
        })
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            // A server that closes without a close_notify ends the stream all the same.
            Stream::Tls(s) => match s.read(buf) {
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The name a server at `addr` (`host:port`) must prove: its host, a DNS name or an IP.
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host} is not a server name: {e}"))
}

/// The largest answer read, head and body.
const MAX_ANSWER: usize = 64 << 20;

/// An HTTP answer: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code; 0 when the request failed without an answer.
    pub status: u16,
    /// The body (or the error's text when `status` is 0).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A failed request: status 0 and the error as the body.
    fn failed(e: impl std::fmt::Display) -> Reply {
        Reply { status: 0, body: e.to_string().into_bytes() }
    }
}

/// Sends `method path` with `body` to `addr` (`host:port`) and reads the answer, all
/// within `timeout`; a request that gets no answer is a [`Reply`] with status 0 whose
/// body says why (`Connection refused ...`, `timed out ...`).
pub fn request(addr: &str, method: &str, path: &str, body: Option<&[u8]>, timeout: Duration) -> Reply {
    request_with(None, addr, method, path, body, timeout)
}

/// [`request`] over HTTPS when `trust` is given.
pub fn request_with(
    trust: Option<&HttpsTrust>,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Reply {
    request_with_headers(trust, addr, method, path, &[], body, timeout)
}

/// [`request_with`] with extra header lines (`name`, `value`); a name or value holding
/// a line break is left out.
pub fn request_with_headers(
    trust: Option<&HttpsTrust>,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Reply {
    let mut extra = String::new();
    for (name, value) in headers {
        if !(name.contains(['\r', '\n']) || value.contains(['\r', '\n'])) {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let deadline = Instant::now() + timeout;
    let target = match resolve(addr) {
        Ok(a) => a,
        Err(e) => return Reply::failed(e),
    };
    match exchange(trust, target, addr, method, path, &extra, body, deadline, timeout) {
        Ok(reply) => reply,
        Err(e) => Reply::failed(e),
    }
}

/// The first address `addr` (`host:port`) resolves to.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

#[allow(clippy::too_many_arguments)]
fn exchange(
    trust: Option<&HttpsTrust>,
    target: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: Option<&[u8]>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Reply, String> {
    let mut stream = connect(trust, target, host, timeout)?;
    exchange_on(&mut stream, host, method, path, extra_headers, body, deadline, timeout, false)
}

/// A connection to `target` (named `host`) with Nagle's algorithm off; with `trust`, a
/// TLS session whose handshake runs with the first request.
fn connect(trust: Option<&HttpsTrust>, target: SocketAddr, host: &str, timeout: Duration) -> Result<Stream, String> {
    let stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| timed_out(e, timeout))?;
    let _ = stream.set_nodelay(true);
    let Some(trust) = trust else {
        return Ok(Stream::Plain(stream));
    };
    let session = rustls::ClientConnection::new(trust.config.clone(), server_name(host)?)
        .map_err(|e| format!("TLS with {host}: {e}"))?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream))))
}

/// An I/O error as text, a timeout saying how long it waited.
fn timed_out(e: std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("timed out after {timeout:?}"),
        _ => e.to_string(),
    }
}

/// Sends one request on `stream` and reads its answer (`keep_alive`: asks the server to
/// keep the connection open for the next one).
#[allow(clippy::too_many_arguments)]
fn exchange_on(
    stream: &mut Stream,
    host: &str,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: Option<&[u8]>,
    deadline: Instant,
    timeout: Duration,
    keep_alive: bool,
) -> Result<Reply, String> {
    let timed_out = |e: std::io::Error| timed_out(e, timeout);
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n{extra_headers}");
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.tcp().set_write_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
    // A server may answer (413) and close before taking the whole body: the answer is
    // still read.
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.unwrap_or_default()))
        .and_then(|()| stream.flush());
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(reply) = parse(&answer, false)? {
            return Ok(reply);
        }
        stream.tcp().set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if answer.len() + n <= MAX_ANSWER => answer.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(format!("the answer is larger than {MAX_ANSWER} bytes")),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if answer.is_empty() => return Err(sent.err().map_or_else(|| timed_out(e), |s| s.to_string())),
            Err(e) => return Err(timed_out(e)),
        }
    }
    match parse(&answer, true)? {
        Some(reply) => Ok(reply),
        None if answer.is_empty() => {
            Err(sent.err().map_or("the connection closed without an answer".into(), |e| e.to_string()))
        }
        None => Err("the connection closed in the middle of the answer".into()),
    }
}

/// One HTTP/1.1 connection kept open across requests, for clients that send many
/// (a load in the process tests): a request that fails drops the connection, and the
/// next one opens a new connection.
#[derive(Debug)]
pub struct Connection {
    host: String,
    target: SocketAddr,
    timeout: Duration,
    trust: Option<HttpsTrust>,
    stream: Option<Stream>,
}

impl Connection {
    /// A connection to `addr` (`host:port`, resolved now); each request, connecting
    /// included, must finish within `timeout`. Nothing is sent until the first request.
    pub fn new(addr: &str, timeout: Duration) -> Result<Connection, String> {
        Connection::with_trust(addr, timeout, None)
    }

    /// [`Connection::new`] over HTTPS when `trust` is given.
    pub fn with_trust(addr: &str, timeout: Duration, trust: Option<HttpsTrust>) -> Result<Connection, String> {
        let target = resolve(addr)?;
        Ok(Connection { host: addr.to_string(), target, timeout, trust, stream: None })
    }

    /// Sends `method path` with `body` and reads the answer, like [`request`]; a request
    /// that gets no answer is a [`Reply`] with status 0.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
        let deadline = Instant::now() + self.timeout;
        let stream = match self.stream.take() {
            Some(s) => s,
            None => match connect(self.trust.as_ref(), self.target, &self.host, self.timeout) {
                Ok(s) => s,
                Err(e) => return Reply::failed(e),
            },
        };
        let mut stream = stream;
        match exchange_on(&mut stream, &self.host, method, path, "", body, deadline, self.timeout, true) {
            Ok(reply) => {
                self.stream = Some(stream);
                reply
            }
            Err(e) => Reply::failed(e),
        }
    }
}

/// The time left until `deadline`, or a timeout error.
fn left(deadline: Instant) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err("timed out".into())
    } else {
        Ok(d)
    }
}

/// The answer in `bytes` if it is complete (`closed`: the server has closed the
/// connection, which ends a body of unstated length).
fn parse(bytes: &[u8], closed: bool) -> Result<Option<Reply>, String> {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.trim().parse::<usize>().map_err(|_| format!("bad content-length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let rest = &bytes[end + 4..];
    let body = if chunked {
        match dechunk(rest)? {
            Some(body) => body,
            None if closed => return Err("the connection closed in the middle of a chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        match rest.get(..n) {
            Some(body) => body.to_vec(),
            None if closed => return Err("the connection closed before the whole body arrived".into()),
            None => return Ok(None),
        }
    } else if closed {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Reply { status, body }))
}

/// A chunked body put together, if all of it is in `bytes`.
fn dechunk(mut bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size = String::from_utf8_lossy(&bytes[..eol]);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))?;
        let data = &bytes[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        match data.get(..size + 2) {
            Some(chunk) => body.extend_from_slice(&chunk[..size]),
            None => return Ok(None),
        }
        bytes = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_by_length_by_chunks_and_by_close() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcdef", false).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab", false).unwrap(), None);
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nab", true).is_err());
        let r =
            parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n", false)
                .unwrap()
                .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abc"[..]));
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\nrest", false).unwrap(), None);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n\r\nrest", true).unwrap().unwrap().body, b"rest");
        assert!(parse(b"garbage\r\n\r\n", true).is_err());
    }

    /// A server that answers every request on a connection with its number on that
    /// connection, then closes the connection after `per_connection` answers.
    fn counting_server(per_connection: usize) -> (std::net::SocketAddr, std::thread::JoinHandle<usize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut connections = 0;
            for stream in listener.incoming().take(2) {
                connections += 1;
                let mut stream = stream.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                for n in 1..=per_connection {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let got = stream.read(&mut chunk).unwrap();
                        assert!(got > 0, "the client closed early");
                        buf.extend_from_slice(&chunk[..got]);
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    assert!(String::from_utf8_lossy(&buf[..end]).contains("Connection: keep-alive"));
                    buf.drain(..end);
                    let body = n.to_string();
                    write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
                }
            }
            connections
        });
        (addr, server)
    }

    #[test]
    fn a_connection_is_reused_and_reopened_after_the_server_closes_it() {
        let (addr, server) = counting_server(3);
        let mut c = Connection::new(&addr.to_string(), Duration::from_secs(5)).unwrap();
        let bodies: Vec<String> = (0..3).map(|_| c.request("GET", "/", None).text()).collect();
        assert_eq!(bodies, ["1", "2", "3"], "three requests on one connection");
        // The server closed it: the next request fails, the one after reconnects.
        let mut replies = vec![c.request("PUT", "/x", Some(b"v"))];
        if replies[0].status == 0 {
            replies.push(c.request("PUT", "/x", Some(b"v")));
        }
        assert_eq!(replies.last().unwrap().text(), "1", "{replies:?}");
        assert_eq!(c.request("GET", "/", None).text(), "2");
        assert_eq!(c.request("GET", "/", None).text(), "3");
        assert_eq!(server.join().unwrap(), 2);
    }

    #[test]
    fn a_closed_port_is_status_zero_with_the_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = request(&format!("127.0.0.1:{port}"), "GET", "/status", None, Duration::from_secs(1));
        assert_eq!(r.status, 0);
        assert!(r.text().contains("Connection refused"), "{}", r.text());
    }
}
