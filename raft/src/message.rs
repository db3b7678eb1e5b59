//! Messages exchanged between Raft nodes, and their versioned serialized form.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::snapshot::SnapshotMeta;
use crate::types::{Entry, LogId, LogIndex, NodeId, Term};

/// A message from one node to another. `term` is the sender's current term, except for
/// a pre-vote request, where it is the term the sender would campaign in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sending node.
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// See the type's documentation.
    pub term: Term,
    /// The message itself.
    pub body: MessageBody,
}

/// The kinds of messages (paper figure 2, thesis §9.6 for pre-vote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// A pre-vote request (thesis §9.6): would you vote for me in `term`?
    /// Nobody changes state on receiving it.
    PreVote {
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
    },
    /// The answer to a pre-vote. `term` is the requested term when granted, the
    /// responder's term when refused.
    PreVoteResponse {
        /// Whether the pre-vote is granted.
        granted: bool,
    },
    /// A vote request (paper §5.2).
    RequestVote {
        /// Index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// Term of the candidate's last log entry.
        last_log_term: Term,
        /// The leader asked the candidate to campaign (leadership transfer, thesis
        /// §3.10): voters grant it even within the leader lease.
        transfer: bool,
    },
    /// The answer to a vote request.
    RequestVoteResponse {
        /// Whether the vote is granted.
        granted: bool,
    },
    /// Log replication (paper §5.3).
    AppendEntries {
        /// Index of the entry just before `entries`.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// The entries to append, contiguous from `prev_log_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// An `AppendEntries` without entries whose only news is the commit index, sent to a
    /// follower the leader is replicating to (not probing). The follower runs the same
    /// consistency check and commit update; it answers only a failed check (with the
    /// rejection an `AppendEntries` gets). A success would tell the leader nothing that
    /// the answers to the entries themselves do not.
    Commit {
        /// Index of the entry just before the follower's next one, as the leader sees it.
        prev_log_index: LogIndex,
        /// Term of that entry.
        prev_log_term: Term,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The leader's log is durable through `index`, in the configuration whose entry is
    /// at `config_index`. Sent unanswered to voters while that index is not yet known
    /// committed. In a configuration where the leader and one follower are a majority (3
    /// voters), a follower that holds the same entries durably knows them committed
    /// without waiting for the leader to hear its acknowledgement.
    Durable {
        /// The leader's highest durable index.
        index: LogIndex,
        /// Index of the leader's latest membership entry.
        config_index: LogIndex,
    },
    /// The answer to `AppendEntries`.
    AppendEntriesResponse {
        /// Whether the consistency check passed and the entries are durable.
        success: bool,
        /// On success, the last index known to match the leader
        /// (`prev_log_index + entries.len()`); on failure, the rejected
        /// `prev_log_index`.
        index: LogIndex,
        /// On failure, a hint where the logs may match (thesis §5.3 optimization).
        hint: Option<ConflictHint>,
    },
    /// A leader's periodic heartbeat. It carries no entries and is not subject to the
    /// replication window, so replication never starves it.
    Heartbeat {
        /// The leader's commit index, capped at what the receiver is known to hold.
        commit: LogIndex,
        /// An opaque context echoed in the response (used by read-index rounds).
        ctx: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The echoed context.
        ctx: u64,
    },
    /// Client requests proposed on a follower, forwarded to the leader it knows. Not part
    /// of the protocol proper: the message's `term` is ignored, and the receiver answers
    /// with [`MessageBody::ForwardResponse`]. Only session operations are forwarded, so
    /// that a copy appended twice (a retry, a duplicate) is applied once.
    Forward {
        /// Chosen by the sender to match the answer.
        id: u64,
        /// The session operations, to be appended in this order.
        requests: Vec<crate::session::SessionOp>,
    },
    /// The answer to [`MessageBody::Forward`]. On acceptance the message's `term` is the
    /// term of the appended entries.
    ForwardResponse {
        /// The request's id.
        id: u64,
        /// What the receiver did with the commands.
        result: ForwardResult,
    },
    /// A follower asks the leader for a read index (thesis §6.4.1). The message's `term`
    /// is ignored.
    ReadIndex {
        /// Chosen by the sender to match the answer.
        id: u64,
    },
    /// The answer to [`MessageBody::ReadIndex`]: the leader's commit index once a quorum
    /// confirmed its leadership, or `None` if the receiver could not serve it (not the
    /// leader, or it lost leadership before confirmation).
    ReadIndexResponse {
        /// The request's id.
        id: u64,
        /// The read index.
        index: Option<LogIndex>,
    },
    /// A chunk of the leader's latest snapshot, for a follower that needs entries the
    /// leader has purged (paper §7). Chunks go out in order from offset 0, a bounded
    /// number at a time; the follower writes them to a temp file in order and installs
    /// the snapshot once all `meta.size` bytes arrived and match `meta.checksum`.
    InstallSnapshot {
        /// The snapshot: its last entry, membership, size and checksum.
        meta: SnapshotMeta,
        /// Where `data` starts in the snapshot's data.
        offset: u64,
        /// The chunk.
        #[serde(deserialize_with = "crate::shared_bytes::bytes")]
        data: bytes::Bytes,
    },
    /// The answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse {
        /// The last entry of the snapshot being answered.
        last: LogId,
        /// How many bytes of the snapshot the follower holds in order: where the next
        /// chunk should start (the leader goes back there after a loss).
        next_offset: u64,
        /// The follower holds everything the snapshot covers, durably (it installed it,
        /// or already had it): its log matches the leader's through `last.index`.
        done: bool,
    },
    /// Leadership transfer (thesis §3.10): the leader tells a voter whose log matches its
    /// own to start an election at once.
    TimeoutNow,
}

/// What a leader did with forwarded commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardResult {
    /// Appended at consecutive indexes from `first_index`, in the response's term.
    Accepted {
        /// Index of the first command.
        first_index: LogIndex,
    },
    /// The receiver does not lead; the leader it knows of, if any. Nothing was appended.
    NotLeader {
        /// The receiver's leader hint.
        leader: Option<NodeId>,
    },
    /// The leader refused for back-pressure. Nothing was appended.
    Overloaded,
    /// The receiver could not tell whether it appended the requests.
    Unknown,
}

/// Where a follower's log may match the leader's, sent with a rejected append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The follower's term at `index`, when the follower has an entry at the rejected
    /// index.
    pub conflict_term: Option<Term>,
    /// With `conflict_term`: the follower's last index at or below the rejected one whose
    /// term is at most the leader's `prev_log_term` (entries with newer terms cannot
    /// match), or its commit index if that is higher. Without: one past the follower's
    /// last index.
    pub index: LogIndex,
}

/// The serialized form of a message, tagged with a format version so that later
/// versions can be told apart on the wire and on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionedMessage {
    /// Format version 1.
    V1(Message),
}

impl Message {
    /// Encodes the message in its versioned postcard form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the message's versioned postcard form to `out`, reserving room for it
    /// first (one allocation at most, no intermediate buffer).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.approx_size());
        // Encoding into a Vec only fails on allocation failure, which aborts anyway.
        if let Ok(v) = postcard::to_extend(&VersionedMessageRef::V1(self), std::mem::take(out)) {
            *out = v;
        }
    }

    /// Decodes a message from its versioned postcard form.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        match postcard::from_bytes::<VersionedMessage>(bytes)? {
            VersionedMessage::V1(m) => Ok(m),
        }
    }

    /// Decodes a message like [`Message::decode`], but the commands it carries (in
    /// entries and forwarded batches) are views of `frame` rather than copies: no
    /// allocation per command. `frame` stays allocated while any of them lives, so pass
    /// a buffer that holds this one message, not a larger read buffer.
    pub fn decode_shared(frame: &bytes::Bytes) -> Result<Message, DecodeError> {
        crate::shared_bytes::with_source(frame, Message::decode)
    }

    /// A rough size in bytes, for flow control.
    pub fn approx_size(&self) -> usize {
        match &self.body {
            MessageBody::AppendEntries { entries, .. } => 48 + entries.iter().map(Entry::approx_size).sum::<usize>(),
            MessageBody::Forward { requests, .. } => 48 + requests.iter().map(|c| 32 + c.command_len()).sum::<usize>(),
            MessageBody::InstallSnapshot { meta, data, .. } => 96 + 8 * meta.membership.len() + data.len(),
            _ => 48,
        }
    }
}

#[derive(Serialize)]
enum VersionedMessageRef<'a> {
    V1(&'a Message),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryPayload;

    #[test]
    fn message_roundtrips_through_versioned_encoding() {
        let m = Message {
            from: 1,
            to: 2,
            term: 7,
            body: MessageBody::AppendEntries {
                prev_log_index: 3,
                prev_log_term: 6,
                entries: vec![Entry {
                    term: 7,
                    index: 4,
                    payload: EntryPayload::Command(bytes::Bytes::from_static(b"x")),
                }],
                leader_commit: 3,
            },
        };
        let bytes = m.encode();
        assert_eq!(bytes[0], 0, "version tag leads the encoding");
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn shared_decoding_keeps_commands_as_views_of_the_frame() {
        let command = |n: u8| bytes::Bytes::from(vec![n; 300]);
        let entry = |index| Entry { term: 2, index, payload: EntryPayload::Command(command(index as u8)) };
        let append = MessageBody::AppendEntries {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![entry(1), entry(2)],
            leader_commit: 0,
        };
        let op = |n| crate::session::SessionOp::Command { client: 5, seq: n, acked: 0, command: command(n as u8) };
        let forward = MessageBody::Forward { id: 9, requests: vec![op(7), op(8)] };
        for body in [append, forward] {
            let m = Message { from: 1, to: 2, term: 2, body };
            let frame = bytes::Bytes::from(m.encode());
            let within = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
            let decoded = Message::decode_shared(&frame).unwrap();
            drop(frame);
            // Equal to the original, and still readable once the caller dropped the frame.
            assert_eq!(decoded, m);
            let commands: Vec<&bytes::Bytes> = match &decoded.body {
                MessageBody::AppendEntries { entries, .. } => entries
                    .iter()
                    .filter_map(|e| match &e.payload {
                        EntryPayload::Command(c) => Some(c),
                        _ => None,
                    })
                    .collect(),
                MessageBody::Forward { requests, .. } => requests
                    .iter()
                    .filter_map(|r| match r {
                        crate::session::SessionOp::Command { command, .. } => Some(command),
                        _ => None,
                    })
                    .collect(),
                _ => unreachable!(),
            };
            assert_eq!(commands.len(), 2);
            for c in commands {
                assert!(within.contains(&(c.as_ptr() as usize)), "a command was copied out of the frame");
            }
        }
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for input in [&[][..], &[1][..], &[0, 1, 2][..], &[0xff; 40][..]] {
            assert!(Message::decode(input).is_err());
        }
    }
}
