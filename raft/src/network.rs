//! The [`Network`] trait: how a node sends messages to its peers.

use async_trait::async_trait;

use crate::error::NetworkError;
use crate::membership::Membership;
use crate::message::Message;
use crate::types::NodeId;

/// Sends messages to peers. Receiving is the other half: whatever receives messages for
/// a node hands them to [`Raft::receive`](crate::Raft::receive).
///
/// # Contract
///
/// - Delivery is best effort: a message may be lost, delayed, duplicated or reordered,
///   and Raft stays correct. An error is logged by the driver and otherwise ignored.
/// - `send` may be called concurrently for different peers (the driver runs one sender
///   task per peer) and is called sequentially for one peer, in the order messages
///   should go out.
/// - `send` should return quickly: when a peer is slow or down, an implementation should
///   queue a bounded number of messages and drop the rest, rather than block for long.
/// - [`Network::members_changed`] is called from the node's protocol loop, so it must not
///   block; it is called once when the node starts and again each time the
///   configuration in effect changes, and never concurrently with itself.
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Sends `msg` to node `to` (equal to `msg.to`).
    async fn send(&self, to: NodeId, msg: Message) -> Result<(), NetworkError>;

    /// The configuration in effect is now `membership` (at start, the one the node
    /// restarted with). Its [`nodes`](Membership::nodes) say how to reach the nodes to
    /// talk to: the members, and also the members of earlier configurations while the
    /// entry that removes them is not committed (a leader removing itself leads until
    /// then, and the others must still take its messages). A transport that learns peers
    /// from the log adds those, updates changed addresses, and drops peers that are
    /// neither members nor in `nodes` (ids without an address it keeps as they are: a
    /// cluster may have been bootstrapped from ids alone). It is called on the protocol
    /// loop, so it must return quickly: anything slow, a DNS lookup for one, belongs on a
    /// task of its own. The default does nothing: the transport's peers are configured
    /// otherwise.
    fn members_changed(&self, membership: &Membership) {
        let _ = membership;
    }
}
