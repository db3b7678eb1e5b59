//! The process-level tests of the apps: real `kv`, `counter` and `cluster` processes on
//! loopback, one test binary.

mod cluster_launcher;
mod counter_cluster;
mod dns_cluster;
mod idempotency;
mod kv_bad_input;
mod kv_cluster;
mod kv_linearizability;
mod kv_membership;
mod kv_partitions;
mod kv_snapshots;
mod kv_tls;
mod metrics;
mod support;
