//! The `counter` app: its HTTP API ([`CounterApp`], the routes) in front of the
//! replicated [`Counter`] ([`state`]).
//!
//! | request | answer |
//! |---|---|
//! | `POST /incr`, optional body: an integer delta (default 1) | 200 `{"value": N}` once applied |
//! | `GET /value` | 200 `{"value": N}`, linearizable (`?stale`: this replica) |
//!
//! `POST /incr` may carry an `Idempotency-Key` header: an increment repeated with the
//! same key, through any node, even after a leader change or a restart, is applied once
//! and answered with the first answer (the value right after it was applied).

pub mod state;

use bytes::Bytes;
use hyper::{Method, Request};

pub use self::state::Counter;
use crate::host::{App, AppNode};
use crate::http::{self, ApiError, HttpResponse};

/// The longest `/incr` body read.
const MAX_DELTA_BODY: usize = 64;

/// The `counter` app.
#[derive(Clone, Debug, Default)]
pub struct CounterApp;

fn parse_delta(body: &[u8]) -> Result<i64, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("the delta is not UTF-8 text".into()))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(1);
    }
    text.parse().map_err(|_| ApiError::BadRequest(format!("the body must be an integer delta, not `{text}`")))
}

impl App for CounterApp {
    type Machine = Counter;
    const NAME: &'static str = "counter";
    const ABOUT: &'static str = "One node of a replicated counter with an HTTP API";
    const CLUSTER_ID: u64 = 0x636e_0001;

    fn max_body_size(&self, _method: &Method, _path: &str) -> usize {
        MAX_DELTA_BODY
    }

    async fn handle<'a>(
        &'a self,
        node: &'a AppNode<Counter>,
        request: Request<Bytes>,
    ) -> Result<HttpResponse, ApiError> {
        let path = request.uri().path();
        let method = request.method();
        match path {
            "/incr" if method == Method::POST => {
                let once = http::idempotency_key(&request)?;
                let value = node.propose_keyed(once.as_deref(), parse_delta(request.body())?).await?;
                Ok(http::json_ok(&serde_json::json!({ "value": value })))
            }
            "/incr" => Err(http::method_not_allowed(method, path, "POST")),
            "/value" if method == Method::GET => {
                let value = if http::query_flag(request.uri().query(), "stale") {
                    node.read_stale(Counter::value)
                } else {
                    node.read(Counter::value).await?
                };
                Ok(http::json_ok(&serde_json::json!({ "value": value })))
            }
            "/value" => Err(http::method_not_allowed(method, path, "GET")),
            _ => Err(http::not_found(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_default_to_one_and_may_be_negative() {
        assert_eq!(parse_delta(b""), Ok(1));
        assert_eq!(parse_delta(b" \n"), Ok(1));
        assert_eq!(parse_delta(b"5"), Ok(5));
        assert_eq!(parse_delta(b"-3\n"), Ok(-3));
        assert!(parse_delta(b"1.5").is_err());
        assert!(parse_delta(b"ten").is_err());
        assert!(parse_delta(&[0xff]).is_err());
        assert!(parse_delta(b"99999999999999999999").is_err());
    }
}
