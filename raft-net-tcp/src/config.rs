//! The transport's settings.

use std::time::Duration;

use raft::NodeId;

/// Settings of a [`TcpTransport`](crate::TcpTransport). [`TcpConfig::new`] gives defaults
/// suited to a LAN.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// The cluster's id; connections from other clusters are refused.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: NodeId,
    /// The largest frame payload sent or accepted, in bytes.
    pub max_frame_size: u32,
    /// The most frames queued for one peer; beyond it the oldest queued frame is
    /// dropped (Raft tolerates loss and newer messages supersede older ones).
    pub send_queue_len: usize,
    /// The most bytes queued for one peer; beyond it the oldest frames are dropped.
    pub send_queue_bytes: usize,
    /// The most bytes written in one batch (one write and one flush); a single larger
    /// frame is written alone.
    pub max_batch_bytes: usize,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long one batch write (including its flush) may take before the connection
    /// is dropped and reopened.
    pub write_timeout: Duration,
    /// How long the handshake may take, on either side.
    pub handshake_timeout: Duration,
    /// The first delay before reconnecting after a failure.
    pub backoff_min: Duration,
    /// The longest delay between reconnection attempts.
    pub backoff_max: Duration,
    /// The most concurrent inbound connections; more are closed on accept.
    pub max_inbound_connections: usize,
    /// Mutual TLS with the peers (feature `tls`): when set, every connection, inbound
    /// and outbound, is a TLS 1.3 session in which both certificates are verified
    /// against the cluster's CA, and a peer's hello must claim the node id its
    /// certificate names. `None` (the default): plaintext, peers are not authenticated.
    /// Every node of a cluster must use the same choice.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::TlsConfig>,
    /// This node's data-directory incarnation and those recorded for its peers: when
    /// set, a peer that presents another incarnation than the one recorded for it (it
    /// lost its data) is refused both ways (see [`crate::incarnation`]). `None` (the
    /// default): no incarnation is sent nor checked.
    pub incarnations: Option<std::sync::Arc<crate::Incarnations>>,
    /// The local address outgoing connections are made from (any port); `None` (the
    /// default): the one the OS picks. Giving each node an address of its own (say
    /// 127.0.0.N on one machine) lets a firewall tell the nodes' traffic apart.
    pub bind_source: Option<std::net::IpAddr>,
}

impl TcpConfig {
    /// Defaults: 16 MiB frames, 1024 queued frames or 64 MiB per peer, 1 MiB batches,
    /// 1 s connect and handshake timeouts, 5 s write timeout, backoff from 20 ms to
    /// 1 s, 128 inbound connections, no TLS, no incarnations, the OS's source address.
    pub fn new(cluster_id: u64, node_id: NodeId) -> TcpConfig {
        TcpConfig {
            cluster_id,
            node_id,
            max_frame_size: 16 << 20,
            send_queue_len: 1024,
            send_queue_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            max_inbound_connections: 128,
            #[cfg(feature = "tls")]
            tls: None,
            incarnations: None,
            bind_source: None,
        }
    }
}
