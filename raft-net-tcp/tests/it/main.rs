//! The integration tests of `raft-net-tcp`, in one test binary (one link instead of one
//! per file).

mod cluster;
mod codec_props;
mod incarnations;
mod members;
#[cfg(feature = "tls")]
mod tls;
