//! A small blocking HTTP/1.1 client for the launcher: one request per connection
//! (`Connection: close`), enough to poll `/status` and to drive an app in the process
//! tests, without an HTTP client crate in the apps' dependencies.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + timeout;
    let target = match addr.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => return Reply::failed(format!("{addr} resolves to no address")),
        Err(e) => return Reply::failed(e),
    };
    match exchange(target, addr, method, path, body, deadline, timeout) {
        Ok(reply) => reply,
        Err(e) => Reply::failed(e),
    }
}

fn exchange(
    target: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Reply, String> {
    let timed_out = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!("timed out after {timeout:?}"),
        _ => e.to_string(),
    };
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(timed_out)?;
    let _ = stream.set_nodelay(true);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.set_write_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
    // A server may answer (413) and close before taking the whole body: the answer is
    // still read.
    let sent = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.unwrap_or_default()));
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(reply) = parse(&answer, false)? {
            return Ok(reply);
        }
        stream.set_read_timeout(Some(left(deadline)?)).map_err(|e| e.to_string())?;
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

    #[test]
    fn a_closed_port_is_status_zero_with_the_reason() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = request(&format!("127.0.0.1:{port}"), "GET", "/status", None, Duration::from_secs(1));
        assert_eq!(r.status, 0);
        assert!(r.text().contains("Connection refused"), "{}", r.text());
    }
}
