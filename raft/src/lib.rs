//! A Raft consensus framework: a deterministic, sans-IO protocol core ([`core`]) driven
//! by a thin async driver ([`Raft`]) on tokio or smol, against your [`StateMachine`] and
//! any [`LogStore`] and [`Network`].
//!
//! # Example
//!
//! Three nodes in one process with the in-memory store and network of the `testing`
//! feature, on tokio:
//!
//! ```
//! # #[cfg(all(feature = "tokio", feature = "testing"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use raft::testing::{mem_network::MemNetwork, mem_store::MemStore};
//! use raft::{runtime::TokioRuntime, Config, LogIndex, Raft, StateMachine};
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     type Command = u64;
//!     type Response = u64;
//!     fn apply(&mut self, _index: LogIndex, delta: u64) -> u64 {
//!         self.0 += delta;
//!         self.0
//!     }
//!     type Snapshot = u64;
//!     fn snapshot(&self) -> u64 {
//!         self.0
//!     }
//!     fn write_snapshot(value: u64, out: &mut dyn std::io::Write) -> std::io::Result<()> {
//!         out.write_all(&value.to_le_bytes())
//!     }
//!     fn restore(&mut self, input: &mut dyn std::io::Read) -> Result<(), String> {
//!         let mut bytes = [0; 8];
//!         input.read_exact(&mut bytes).map_err(|e| e.to_string())?;
//!         self.0 = u64::from_le_bytes(bytes);
//!         Ok(())
//!     }
//! }
//!
//! let rt = tokio::runtime::Runtime::new()?;
//! rt.block_on(async {
//!     let runtime = TokioRuntime::new();
//!     let net = MemNetwork::new(runtime.clone(), 1);
//!     let mut nodes = Vec::new();
//!     for id in 1..=3 {
//!         let node = Raft::bootstrap(id, [1, 2, 3], Config::default(), runtime.clone(),
//!                                    MemStore::new(), net.endpoint(id), Counter::default()).await?;
//!         let n = node.clone();
//!         net.register(id, Arc::new(move |msg| n.receive(msg)));
//!         nodes.push(node);
//!     }
//!     // Wait (woken by each status change, no polling) until node 1 knows a leader,
//!     // which may be itself.
//!     let id = nodes[0].wait_leader(Duration::from_secs(10)).await?;
//!     let leader = &nodes[id as usize - 1];
//!     assert_eq!(leader.propose(5).await?, 5);
//!     assert_eq!(leader.propose(2).await?, 7);
//!     for n in &nodes {
//!         n.shutdown().await;
//!     }
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(all(feature = "tokio", feature = "testing")))]
//! # fn main() {}
//! ```

pub mod config;
pub mod core;
mod driver;
pub mod error;
pub mod membership;
pub mod message;
pub mod metrics;
pub mod network;
pub mod quorum;
pub mod runtime;
pub mod session;
mod shared_bytes;
pub mod snapshot;
pub mod state_machine;
pub mod status;
pub mod storage;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use crate::core::{Role, TransferError};
pub use config::Config;
pub use driver::Raft;
pub use error::{ChangeError, ClientError, DecodeError, NetworkError, StartError, StoreError, WaitError};
pub use membership::{ConfigChange, ConfigError, Membership, NodeInfo};
pub use message::{Message, MessageBody};
pub use metrics::{Counters, Histogram, Latencies, Metrics, SessionStats};
pub use network::Network;
pub use runtime::Runtime;
pub use session::{ClientId, SessionOp};
pub use snapshot::{SnapshotMeta, SnapshotStore, SnapshotWriter};
pub use state_machine::StateMachine;
pub use status::Status;
pub use storage::{InitialState, LogStore};
pub use types::{Entry, EntryPayload, HardState, Instant, LogId, LogIndex, NodeId, Proposal, Term};
