//! One kv request on a fresh connection, telling "never sent" from "no answer".

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::http_client::Conn;

/// What became of a request.
#[derive(Debug)]
pub(super) enum Answer {
    /// The connection could not be made: the request was never sent.
    NotSent,
    /// Sent, but no answer came in time (or the connection broke): the outcome is unknown.
    Lost,
    /// The status and body.
    Got(u16, Bytes),
}

/// Sends `method path` with `body` to `addr` on a new connection, waiting up to `timeout`
/// for the answer.
pub(super) async fn call(addr: SocketAddr, method: &str, path: &str, body: &[u8], timeout: Duration) -> Answer {
    let Ok(Ok(mut conn)) = tokio::time::timeout(timeout, Conn::connect(addr)).await else {
        return Answer::NotSent;
    };
    let send = conn.send(|host, out| {
        out.extend_from_slice(
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
        );
        out.extend_from_slice(body);
    });
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok((status, answer))) => Answer::Got(status.as_u16(), Bytes::copy_from_slice(answer)),
        _ => Answer::Lost,
    }
}
