//! A Raft consensus framework: a deterministic, sans-IO protocol core driven by thin
//! async drivers on tokio or smol.
#![doc = include_str!("../README.md")]

pub mod config;
pub mod core;
pub mod error;
pub mod membership;
pub mod message;
pub mod network;
pub mod node;
pub mod quorum;
pub mod runtime;
pub mod state_machine;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use crate::core::Role;
pub use config::Config;
pub use error::{ClientError, DecodeError, NetworkError, StartError, StoreError};
pub use membership::Membership;
pub use message::{Message, MessageBody};
pub use network::Network;
pub use node::{Raft, Status};
pub use runtime::Runtime;
pub use state_machine::StateMachine;
pub use storage::{InitialState, LogStore};
pub use types::{Entry, EntryPayload, HardState, Instant, LogId, LogIndex, NodeId, Term};
