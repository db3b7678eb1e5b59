//! `GET /status`: what one node reports about itself, built from [`raft::Status`].

use raft::{Raft, Role, StateMachine};

/// The role shown by `/status`: `leader`, `follower`, `candidate` (also while
/// pre-voting) or `learner` (any non-voter).
fn role_name(status: &raft::Status) -> &'static str {
    match status.role {
        _ if !status.is_voter => "learner",
        Role::Leader => "leader",
        Role::Candidate | Role::PreCandidate => "candidate",
        Role::Follower => "follower",
    }
}

/// The body of `GET /status` for a node of `app` running on `runtime`.
pub fn status_json<SM: StateMachine>(raft: &Raft<SM>, app: &str, runtime: &str) -> serde_json::Value {
    let s = raft.status();
    serde_json::json!({
        "id": s.id,
        "role": role_name(&s),
        "term": s.term,
        "leader": s.leader,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "last_log_index": s.last_log_index,
        "durable_index": s.durable_index,
        "snapshot_index": s.snapshot_index,
        "first_log_index": s.first_log_index,
        "voters": s.membership.voters,
        "learners": s.membership.learners,
        "app": app,
        "runtime": runtime,
        "stopped": s.stopped,
        "fatal_error": s.fatal_error,
    })
}
