//! The sender tasks: one per peer, calling [`Network::send`] in order, so that a slow or
//! unreachable peer never delays the protocol loop or the messages to other peers.
//!
//! **Architecture invariant:** messages to one peer leave in the order the core produced
//! them; the protocol loop never awaits the network.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::future;
use futures::StreamExt;
use tracing::Instrument;

use crate::message::{Message, MessageBody};
use crate::network::Network;
use crate::runtime::Runtime;
use crate::types::NodeId;

/// The per-peer sender tasks of one node, started on a peer's first message.
pub(super) struct Senders<R: Runtime, N> {
    id: NodeId,
    rt: R,
    network: Arc<N>,
    peers: BTreeMap<NodeId, mpsc::UnboundedSender<Message>>,
    tasks: Vec<R::JoinHandle>,
}

impl<R: Runtime, N: Network> Senders<R, N> {
    /// Senders for node `id` over `network`; none runs yet.
    pub(super) fn new(id: NodeId, rt: R, network: N) -> Self {
        Senders { id, rt, network: Arc::new(network), peers: BTreeMap::new(), tasks: Vec::new() }
    }

    /// Queues `msg` for its peer's sender task, starting the task if needed.
    pub(super) fn send(&mut self, msg: Message) {
        let to = msg.to;
        tracing::trace!(node = self.id, to, term = msg.term, body = ?MessageKind(&msg), "send");
        let tx = self.peers.entry(to).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded::<Message>();
            let net = self.network.clone();
            let from = self.id;
            let task = async move {
                while let Some(m) = rx.next().await {
                    if let Err(e) = net.send(to, m).await {
                        tracing::debug!(node = from, peer = to, error = %e, "send failed");
                    }
                }
            };
            // The node's span, which the protocol loop runs in.
            self.tasks.push(self.rt.spawn(task.in_current_span()));
            tx
        });
        let _ = tx.unbounded_send(msg);
    }

    /// Tells the network the configuration in effect (`Network::members_changed`).
    pub(super) fn members_changed(&self, membership: &crate::membership::Membership) {
        self.network.members_changed(membership);
    }

    /// Ends every sender task once it has sent what is queued, and waits for them.
    pub(super) async fn close(mut self) {
        self.peers.clear();
        future::join_all(self.tasks).await;
    }
}

/// A short description of a message for trace logs.
struct MessageKind<'a>(&'a Message);

impl std::fmt::Debug for MessageKind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0.body {
            MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit } => {
                write!(f, "Append(prev={prev_log_index}/{prev_log_term}, n={}, commit={leader_commit})", entries.len())
            }
            other => write!(f, "{other:?}"),
        }
    }
}
