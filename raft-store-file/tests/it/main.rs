//! The integration tests of `raft-store-file`, in one test binary (one link instead of
//! one per file). `faults` and `simulation` need the `testing` feature (`FaultFs`).

mod cluster;
mod conformance;
mod crash;
#[cfg(feature = "testing")]
mod faults;
mod model;
mod recovery;
#[cfg(feature = "testing")]
mod simulation;
mod snapshot;
