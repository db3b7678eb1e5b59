//! The admin API under `/cluster`, served by every app on every node:
//!
//! - `GET /cluster`: the configuration this node knows (leader, term, voters, learners,
//!   the joint configuration if any, and every member's Raft and HTTP addresses).
//! - `POST /cluster/learners` `{"id", "raft", "http"}`, `POST /cluster/voters`
//!   `{"voters": [...]}`, `DELETE /cluster/nodes/{id}`, `POST /cluster/transfer-leader`
//!   `{"to"}`: made by the leader; a follower forwards the request to the leader's HTTP
//!   address (kept in the membership under `"http"`), or answers 503 with the leader's id
//!   when it does not know that address.
//!
//! Errors: 400 for a malformed body, 409 for a change that cannot be made now, 503 with
//! no leader or when the change was not seen to complete in time.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use raft::{ChangeError, ConfigError, NodeId, NodeInfo, Raft, StateMachine, TransferError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::http::{self, ApiError, HttpResponse};
use crate::launch::client::{self, HttpsTrust};

/// How long a membership change or a transfer may take before it is answered with 503
/// (a promotion includes the wait for the learners to catch up).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a forwarded request may take: the leader's own timeout and some.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(25);

/// The header a forwarded request carries, so that it is forwarded at most once.
const FORWARDED: &str = "x-raft-forwarded";

/// The largest admin request body read.
pub const MAX_BODY: usize = 64 << 10;

/// The key of a member's HTTP address in [`NodeInfo::data`].
pub const HTTP_KEY: &str = "http";

/// A request of the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /cluster`.
    Show,
    /// `POST /cluster/learners`.
    AddLearner(LearnerBody),
    /// `POST /cluster/voters`.
    SetVoters(VotersBody),
    /// `DELETE /cluster/nodes/{id}`.
    Remove(NodeId),
    /// `POST /cluster/transfer-leader`.
    Transfer(TransferBody),
}

/// The body of `POST /cluster/learners`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnerBody {
    /// The new member's id.
    pub id: NodeId,
    /// Its Raft address, `host:port`.
    pub raft: String,
    /// Its HTTP address, `host:port` (optional: without it, requests cannot be forwarded
    /// to it when it leads).
    #[serde(default)]
    pub http: Option<String>,
}

/// The body of `POST /cluster/voters`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotersBody {
    /// The voters of the new configuration.
    pub voters: Vec<NodeId>,
}

/// The body of `POST /cluster/transfer-leader`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The voter to hand leadership to.
    pub to: NodeId,
}

/// Whether `path` belongs to the admin API.
pub fn is_cluster_path(path: &str) -> bool {
    path == "/cluster" || path.starts_with("/cluster/")
}

/// Parses a JSON body into `T`; anything else is a 400 that says what is wrong.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("malformed request body: {e}")))
}

/// Checks that `addr` looks like `host:port`.
fn check_addr(what: &str, addr: &str) -> Result<(), ApiError> {
    let bad = || ApiError::BadRequest(format!("{what} `{addr}` is not of the form host:port"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

/// The admin request `method path` with `body`.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<Route, ApiError> {
    let want = |allowed: &str, m: &Method| {
        if method == m {
            Ok(())
        } else {
            Err(http::method_not_allowed(method, path, allowed))
        }
    };
    match path {
        "/cluster" => want("GET", &Method::GET).map(|()| Route::Show),
        "/cluster/learners" => {
            want("POST", &Method::POST)?;
            let b: LearnerBody = parse_body(body)?;
            if b.id == 0 {
                return Err(ApiError::BadRequest("node id 0 is reserved".into()));
            }
            check_addr("raft", &b.raft)?;
            if let Some(h) = &b.http {
                check_addr("http", h)?;
            }
            Ok(Route::AddLearner(b))
        }
        "/cluster/voters" => {
            want("POST", &Method::POST)?;
            Ok(Route::SetVoters(parse_body(body)?))
        }
        "/cluster/transfer-leader" => {
            want("POST", &Method::POST)?;
            Ok(Route::Transfer(parse_body(body)?))
        }
        _ => match path.strip_prefix("/cluster/nodes/") {
            Some(id) => {
                want("DELETE", &Method::DELETE)?;
                let id = id.parse().map_err(|_| ApiError::BadRequest(format!("`{id}` is not a node id")))?;
                Ok(Route::Remove(id))
            }
            None => Err(http::not_found(path)),
        },
    }
}

/// What a failed change means for the client: an error to answer, or "ask the leader"
/// (its id if known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer this.
    Answer(ApiError),
    /// This node is not the leader.
    NotLeader(Option<NodeId>),
}

/// Maps a [`ChangeError`] onto the HTTP answer.
pub fn map_change_error(e: ChangeError) -> Failure {
    let message = e.to_string();
    match e {
        ChangeError::Config(ConfigError::NotLeader(l)) | ChangeError::Transfer(TransferError::NotLeader(l)) => {
            Failure::NotLeader(l)
        }
        ChangeError::Config(ConfigError::InvalidId(_)) => Failure::Answer(ApiError::BadRequest(message)),
        ChangeError::Config(_)
        | ChangeError::Transfer(_)
        | ChangeError::NotCaughtUp { .. }
        | ChangeError::TransferAborted(_) => Failure::Answer(ApiError::Conflict(message)),
        ChangeError::Timeout | ChangeError::ShuttingDown => Failure::Answer(ApiError::Unavailable(message)),
    }
}

/// The body of `GET /cluster`.
pub fn cluster_json<SM: StateMachine>(raft: &Raft<SM>) -> serde_json::Value {
    let s = raft.status();
    let m = &s.membership;
    let joint = m.voters_outgoing.as_ref().map(|old| json!({ "old": old, "new": m.voters }));
    let nodes: BTreeMap<String, serde_json::Value> = m
        .nodes
        .iter()
        .map(|(id, n)| (id.to_string(), json!({ "raft": n.addr, "http": n.data.get(HTTP_KEY) })))
        .collect();
    json!({
        "leader": s.leader,
        "term": s.term,
        "voters": m.voters,
        "learners": m.learners,
        "joint": joint,
        "nodes": nodes,
    })
}

/// The admin API of one node.
#[derive(Clone, Debug, Default)]
pub struct ClusterApi {
    /// The CA to check the leader's HTTPS certificate against when forwarding (the nodes
    /// serve HTTPS); plain HTTP without it.
    pub trust: Option<HttpsTrust>,
}

impl ClusterApi {
    /// Answers an admin request (the admin token was checked before).
    pub async fn handle<SM: StateMachine>(
        &self,
        raft: &Raft<SM>,
        request: Request<Bytes>,
    ) -> Result<HttpResponse, ApiError> {
        let route = route(request.method(), request.uri().path(), request.body())?;
        let result = match route.clone() {
            Route::Show => return Ok(http::json_ok(&cluster_json(raft))),
            Route::AddLearner(b) => {
                let mut node = NodeInfo::new(b.raft);
                if let Some(h) = b.http {
                    node = node.with(HTTP_KEY, h);
                }
                raft.add_learner(b.id, node, CHANGE_TIMEOUT).await.map(|index| json!({ "ok": true, "index": index }))
            }
            Route::SetVoters(b) => {
                raft.change_voters(b.voters, CHANGE_TIMEOUT).await.map(|index| json!({ "ok": true, "index": index }))
            }
            Route::Remove(id) => {
                raft.remove_node(id, CHANGE_TIMEOUT).await.map(|index| json!({ "ok": true, "index": index }))
            }
            Route::Transfer(b) => {
                raft.transfer_leadership(b.to, CHANGE_TIMEOUT).await.map(|()| json!({ "ok": true, "leader": b.to }))
            }
        };
        match result.map_err(map_change_error) {
            Ok(body) => Ok(http::json_ok(&body)),
            Err(Failure::Answer(e)) => Err(e),
            Err(Failure::NotLeader(hint)) => self.forward(raft, hint, &request).await,
        }
    }

    /// Sends `request` to the leader and answers with its answer.
    async fn forward<SM: StateMachine>(
        &self,
        raft: &Raft<SM>,
        hint: Option<NodeId>,
        request: &Request<Bytes>,
    ) -> Result<HttpResponse, ApiError> {
        let status = raft.status();
        let Some(leader) = hint.or(status.leader).filter(|&l| l != status.id) else {
            return Err(ApiError::Unavailable("no leader is known; retry later".into()));
        };
        let addr = status.membership.nodes.get(&leader).and_then(|n| n.data.get(HTTP_KEY)).cloned();
        let Some(addr) = addr.filter(|_| !request.headers().contains_key(FORWARDED)) else {
            return Ok(http::json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "error": format!("not the leader; ask node {leader}"), "leader": leader }),
            ));
        };
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let auth = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
        let body = request.body().clone();
        let trust = self.trust.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        let target = addr.clone();
        // The client is blocking: it runs on a thread of its own.
        std::thread::Builder::new()
            .name("admin-forward".into())
            .spawn(move || {
                let mut headers = vec![(FORWARDED, "1")];
                if let Some(a) = auth.as_deref() {
                    headers.push(("Authorization", a));
                }
                let reply = client::request_with_headers(
                    trust.as_ref(),
                    &target,
                    &method,
                    &path,
                    &headers,
                    Some(&body),
                    FORWARD_TIMEOUT,
                );
                let _ = tx.send(reply);
            })
            .map_err(|e| ApiError::Internal(format!("cannot start a thread to forward the request: {e}")))?;
        let reply = rx.await.map_err(|_| ApiError::Internal("the forwarding thread ended without an answer".into()))?;
        let unreachable = || ApiError::Unavailable(format!("cannot reach the leader (node {leader}) at {addr}"));
        let code = StatusCode::from_u16(reply.status).map_err(|_| unreachable())?;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|_| unreachable())?;
        Ok(http::json_response(code, &body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str, body: &str) -> Result<Route, ApiError> {
        route(&Method::POST, path, body.as_bytes())
    }

    #[test]
    fn bodies_parse_and_malformed_ones_are_400() {
        assert_eq!(
            post("/cluster/learners", r#"{"id": 4, "raft": "127.0.0.1:7004", "http": "localhost:8004"}"#),
            Ok(Route::AddLearner(LearnerBody {
                id: 4,
                raft: "127.0.0.1:7004".into(),
                http: Some("localhost:8004".into())
            }))
        );
        assert_eq!(
            post("/cluster/voters", r#"{"voters": [1, 2, 4]}"#),
            Ok(Route::SetVoters(VotersBody { voters: vec![1, 2, 4] }))
        );
        assert_eq!(post("/cluster/transfer-leader", r#"{"to": 2}"#), Ok(Route::Transfer(TransferBody { to: 2 })));
        assert_eq!(route(&Method::DELETE, "/cluster/nodes/3", b""), Ok(Route::Remove(3)));
        assert_eq!(route(&Method::GET, "/cluster", b""), Ok(Route::Show));
        for (path, body) in [
            ("/cluster/learners", ""),
            ("/cluster/learners", "{"),
            ("/cluster/learners", r#"{"id": 4}"#),
            ("/cluster/learners", r#"{"id": 0, "raft": "a:1"}"#),
            ("/cluster/learners", r#"{"id": 4, "raft": "nohost"}"#),
            ("/cluster/learners", r#"{"id": 4, "raft": "a:99999"}"#),
            ("/cluster/learners", r#"{"id": 4, "raft": "a:1", "http": ":8"}"#),
            ("/cluster/learners", r#"{"id": -1, "raft": "a:1"}"#),
            ("/cluster/voters", r#"{"voters": "1,2"}"#),
            ("/cluster/voters", r#"{"voters": [1], "extra": true}"#),
            ("/cluster/transfer-leader", r#"{"to": "x"}"#),
            ("/cluster/transfer-leader", "[]"),
        ] {
            let e = post(path, body).expect_err(body);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{path} {body}: {e}");
        }
        assert_eq!(route(&Method::DELETE, "/cluster/nodes/x", b"").unwrap_err().status(), StatusCode::BAD_REQUEST);
        assert_eq!(route(&Method::GET, "/cluster/voters", b"").unwrap_err().status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(route(&Method::POST, "/cluster", b"").unwrap_err().status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(route(&Method::POST, "/cluster/else", b"").unwrap_err().status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn change_errors_map_onto_409_503_or_forwarding() {
        let status = |e: ChangeError| match map_change_error(e) {
            Failure::Answer(a) => Some(a.status()),
            Failure::NotLeader(_) => None,
        };
        for e in [
            ChangeError::Config(ConfigError::InProgress),
            ChangeError::Config(ConfigError::Transferring),
            ChangeError::Config(ConfigError::NoVoters),
            ChangeError::Config(ConfigError::UnknownNode(9)),
            ChangeError::Config(ConfigError::NoChange),
            ChangeError::NotCaughtUp { id: 4, behind: 100 },
            ChangeError::Transfer(TransferError::NotAVoter(4)),
            ChangeError::Transfer(TransferError::InProgress(2)),
            ChangeError::TransferAborted(2),
        ] {
            assert_eq!(status(e.clone()), Some(StatusCode::CONFLICT), "{e}");
        }
        assert_eq!(status(ChangeError::Timeout), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(status(ChangeError::ShuttingDown), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(status(ChangeError::Config(ConfigError::InvalidId(0))), Some(StatusCode::BAD_REQUEST));
        assert_eq!(map_change_error(ChangeError::Config(ConfigError::NotLeader(Some(2)))), Failure::NotLeader(Some(2)));
        assert_eq!(map_change_error(ChangeError::Transfer(TransferError::NotLeader(None))), Failure::NotLeader(None));
    }
}
