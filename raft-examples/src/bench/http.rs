//! A keep-alive HTTP/1.1 client connection (hyper's low-level client over a tokio socket).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 connection to one node; one request at a time.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    /// Opens a connection to `addr` (TCP_NODELAY set).
    pub async fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes.
            let _ = conn.await;
        });
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        Ok(Conn { sender, host })
    }

    /// The value of the `Host` header for requests on this connection.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `req` and reads the whole response.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        self.sender.ready().await.map_err(|e| format!("connection closed: {e}"))?;
        let resp = self.sender.send_request(req).await.map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| format!("reading body: {e}"))?.to_bytes();
        Ok((status, body))
    }
}

/// Connects to `addr`, sends the request that `build` makes for that host, and reads the
/// response, all within `timeout`.
pub async fn one_shot(
    addr: SocketAddr,
    timeout: Duration,
    build: impl FnOnce(&HeaderValue) -> Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let work = async {
        let mut conn = Conn::connect(addr).await?;
        let req = build(conn.host());
        conn.send(req).await
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("{addr}: no answer within {timeout:?}"))?
}
