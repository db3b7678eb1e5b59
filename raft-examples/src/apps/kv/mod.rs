//! The `kv` app: its HTTP API ([`KvApp`], the routes) in front of the replicated
//! [`KvStore`] ([`state`]).
//!
//! | request | answer |
//! |---|---|
//! | `PUT /kv/{key}`, body = value | 200 `{"ok":true,"index":N}` once committed and applied |
//! | `GET /kv/{key}` | 200 with the value as the body, or 404; linearizable (`?stale`: this replica) |
//! | `DELETE /kv/{key}` | 200 `{"ok":true,"index":N,"existed":bool}` |
//! | `POST /kv/{key}/cas`, body `{"expected": "old" or null, "new": "new"}` | 200 `{"ok":true,"index":N}`, or 409 `{"ok":false,"current": value or null}` |
//!
//! Writes (`PUT`, `DELETE`, `POST .../cas`) may carry an `Idempotency-Key` header: a
//! write repeated with the same key on the same resource, through any node, even after
//! a leader change or a restart, is applied once and answered with the first answer
//! (for as long as the cluster remembers the key: `Config::session_idle_timeout` after
//! its last use). A repeat with a different body still gets the first answer.
//!
//! Keys are percent-decoded from the path and must be valid UTF-8, non-empty and at most
//! [`MAX_KEY_LEN`] bytes (400 otherwise). Values are bytes, at most the maximum value
//! size (413 otherwise). Errors are JSON `{"error": "..."}`.

pub mod state;

use bytes::Bytes;
use hyper::{Method, Request};
use serde::{Deserialize, Serialize};

pub use self::state::{validate_key, KeyError, KvCommand, KvResponse, KvStore, MAX_KEY_LEN};
use crate::host::{App, AppNode};
use crate::http::{self, ApiError, HttpResponse};

/// The body of `POST /kv/{key}/cas`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    /// The value the key must hold; `null` (or absent) means the key must be absent.
    #[serde(default)]
    expected: Option<String>,
    /// The value to store.
    new: String,
}

/// The answer to a put or a successful compare-and-set (fields in the order of the JSON
/// object: alphabetical).
#[derive(Serialize)]
struct Written {
    index: u64,
    ok: bool,
}

/// The answer to a delete.
#[derive(Serialize)]
struct Deleted {
    existed: bool,
    index: u64,
    ok: bool,
}

/// What a request under `/kv/` asks for.
#[derive(Debug, PartialEq, Eq)]
enum KvRoute<'a> {
    /// A key resource: `/kv/{key}` with the raw (still percent-encoded) key.
    Key(&'a str),
    /// `POST /kv/{key}/cas`.
    Cas(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Option<KvRoute<'a>> {
    let rest = path.strip_prefix("/kv/")?;
    match rest.strip_suffix("/cas") {
        Some(key) if method == Method::POST => Some(KvRoute::Cas(key)),
        _ => Some(KvRoute::Key(rest)),
    }
}

fn key(raw: &str) -> Result<String, ApiError> {
    let key = http::decode_path(raw)?;
    validate_key(&key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(key)
}

/// The `kv` app.
#[derive(Clone, Debug)]
pub struct KvApp {
    max_value_size: usize,
}

impl KvApp {
    /// A KV app that accepts values of up to `max_value_size` bytes.
    pub fn new(max_value_size: usize) -> Self {
        KvApp { max_value_size }
    }

    fn check_size(&self, what: &str, len: usize) -> Result<(), ApiError> {
        if len > self.max_value_size {
            Err(ApiError::TooLarge(format!("the {what} is {len} bytes; at most {} are allowed", self.max_value_size)))
        } else {
            Ok(())
        }
    }

    async fn cas(
        &self,
        node: &AppNode<KvStore>,
        key: String,
        body: &[u8],
        once: Option<&[u8]>,
    ) -> Result<HttpResponse, ApiError> {
        let body: CasBody = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("expected {{\"expected\": string or null, \"new\": string}}: {e}"))
        })?;
        self.check_size("new value", body.new.len())?;
        if let Some(e) = &body.expected {
            self.check_size("expected value", e.len())?;
        }
        let cmd = KvCommand::Cas { key, expected: body.expected.map(Bytes::from), new: Bytes::from(body.new) };
        match node.propose_keyed(once, cmd).await? {
            KvResponse::Cas { index, result: Ok(()) } => Ok(http::json_ok(&Written { index, ok: true })),
            KvResponse::Cas { result: Err(current), .. } => {
                let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
                Ok(http::json_response(
                    hyper::StatusCode::CONFLICT,
                    &serde_json::json!({"ok": false, "current": current}),
                ))
            }
            other => Err(ApiError::Internal(format!("unexpected answer to a compare-and-set: {other:?}"))),
        }
    }
}

impl App for KvApp {
    type Machine = KvStore;
    const NAME: &'static str = "kv";
    const ABOUT: &'static str = "One node of a replicated key-value store with an HTTP API";
    const CLUSTER_ID: u64 = 0x6b76_0001;

    fn max_body_size(&self, method: &Method, path: &str) -> usize {
        match route(method, path) {
            // The JSON holds two values, and a little syntax.
            Some(KvRoute::Cas(_)) => 2 * self.max_value_size + 4 * MAX_KEY_LEN,
            _ => self.max_value_size,
        }
    }

    async fn handle<'a>(
        &'a self,
        node: &'a AppNode<KvStore>,
        request: Request<Bytes>,
    ) -> Result<HttpResponse, ApiError> {
        let path = request.uri().path();
        let method = request.method();
        let once = if *method == Method::GET { None } else { http::idempotency_key(&request)? };
        let once = once.as_deref();
        match route(method, path) {
            None => Err(http::not_found(path)),
            Some(KvRoute::Cas(raw)) => self.cas(node, key(raw)?, request.body(), once).await,
            Some(KvRoute::Key(raw)) => {
                if ![Method::GET, Method::PUT, Method::DELETE].contains(method) {
                    return Err(http::method_not_allowed(
                        method,
                        path,
                        "GET, PUT or DELETE (or POST on /kv/{key}/cas)",
                    ));
                }
                let key = key(raw)?;
                if *method == Method::GET {
                    let value = if http::query_flag(request.uri().query(), "stale") {
                        node.read_stale(|kv| kv.get(&key))
                    } else {
                        let k = key.clone();
                        node.read(move |kv| kv.get(&k)).await?
                    };
                    return value.map(http::bytes_ok).ok_or_else(|| ApiError::NotFound(format!("no key `{key}`")));
                }
                if *method == Method::PUT {
                    let value = request.into_body();
                    self.check_size("value", value.len())?;
                    return match node.propose_keyed(once, KvCommand::Put { key, value }).await? {
                        KvResponse::Put { index } => Ok(http::json_ok(&Written { index, ok: true })),
                        other => Err(ApiError::Internal(format!("unexpected answer to a put: {other:?}"))),
                    };
                }
                match node.propose_keyed(once, KvCommand::Delete { key }).await? {
                    KvResponse::Delete { index, existed } => Ok(http::json_ok(&Deleted { existed, index, ok: true })),
                    other => Err(ApiError::Internal(format!("unexpected answer to a delete: {other:?}"))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/kv/a"), Some(KvRoute::Key("a")));
        assert_eq!(route(&Method::PUT, "/kv/a/b"), Some(KvRoute::Key("a/b")));
        assert_eq!(route(&Method::POST, "/kv/a/cas"), Some(KvRoute::Cas("a")));
        assert_eq!(route(&Method::PUT, "/kv/a/cas"), Some(KvRoute::Key("a/cas")));
        assert_eq!(route(&Method::GET, "/kv/"), Some(KvRoute::Key("")));
        assert_eq!(route(&Method::GET, "/kv"), None);
        assert_eq!(route(&Method::GET, "/other"), None);
    }

    #[test]
    fn keys_are_decoded_and_checked() {
        assert_eq!(key("a%2Fb").unwrap(), "a/b");
        assert!(matches!(key(""), Err(ApiError::BadRequest(_))));
        assert!(matches!(key("%ff"), Err(ApiError::BadRequest(_))));
        assert!(matches!(key(&"x".repeat(MAX_KEY_LEN + 1)), Err(ApiError::BadRequest(_))));
        assert_eq!(key(&"x".repeat(MAX_KEY_LEN)).unwrap().len(), MAX_KEY_LEN);
    }

    #[test]
    fn cas_bodies_need_a_new_value() {
        assert!(serde_json::from_str::<CasBody>(r#"{"expected": null, "new": "x"}"#).is_ok());
        assert!(serde_json::from_str::<CasBody>(r#"{"new": "x"}"#).is_ok());
        assert!(serde_json::from_str::<CasBody>(r#"{"expected": "a"}"#).is_err());
        assert!(serde_json::from_str::<CasBody>(r#"{"expected": 1, "new": "x"}"#).is_err());
        assert!(serde_json::from_str::<CasBody>(r#"{"new": "x", "extra": 1}"#).is_err());
    }
}
