//! Log replication (paper §5.3, §5.4.2): the leader side (`leader.rs`: pipelined
//! appends within a bounded window, probing with conflict hints, heartbeats, the commit
//! rule), the follower side (`follower.rs`: the consistency check, truncation, the
//! commit index), and catching up a peer from the store (`catch_up.rs`).

mod catch_up;
mod follower;
mod leader;

/// What a peer with no new entries to receive is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfNothingNew {
    /// Nothing.
    Nothing,
    /// The commit index: a [`MessageBody::Commit`](crate::message::MessageBody::Commit) (not answered) to a peer being
    /// replicated to, an empty `AppendEntries` to a peer being probed.
    Commit,
    /// An empty `AppendEntries`, answered, to learn where the peer stands.
    Append,
}
