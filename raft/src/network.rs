//! The [`Network`] trait: how a node sends messages to its peers.

use async_trait::async_trait;

use crate::error::NetworkError;
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
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// Sends `msg` to node `to` (equal to `msg.to`).
    async fn send(&self, to: NodeId, msg: Message) -> Result<(), NetworkError>;
}
