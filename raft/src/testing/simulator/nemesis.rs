//! The nemesis: a task that partitions, isolates, blocks, drops, duplicates, delays,
//! crashes and restarts nodes at random until the run heals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cluster::ClusterState;
use crate::runtime::Runtime;
use crate::sync::lock;
use crate::testing::mem_network::FaultConfig;
use crate::types::{Instant, NodeId};

pub(super) async fn nemesis_task(
    state: Arc<ClusterState>,
    mut rng: fastrand::Rng,
    stop: Arc<AtomicBool>,
    crashes: Arc<Mutex<usize>>,
) {
    let rt = state.sim.runtime();
    let n = state.opts.nodes;
    let mut down: Vec<(NodeId, Instant)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        rt.sleep_until(rt.now().add(Duration::from_millis(rng.u64(100..600)))).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Restart nodes whose downtime is over.
        let now = rt.now();
        let mut i = 0;
        while i < down.len() {
            if down[i].1 <= now {
                let (id, _) = down.remove(i);
                if let Err(e) = state.start_node(id, None).await {
                    state.log(format!("nemesis: restart of node {id} failed: {e}"));
                }
            } else {
                i += 1;
            }
        }
        match rng.u8(..10) {
            0 => {
                let mut ids: Vec<NodeId> = (1..=n).collect();
                rng.shuffle(&mut ids);
                let k = rng.usize(1..=(n as usize) / 2);
                let (a, b) = ids.split_at(k);
                state.net.partition(a, b);
                state.log(format!("nemesis: partition {a:?} | {b:?}"));
            }
            1 => {
                if let Some(l) = state.leader() {
                    state.net.isolate(l);
                    state.log(format!("nemesis: isolate leader {l}"));
                }
            }
            2 => {
                let a = rng.u64(1..=n);
                let b = rng.u64(1..=n);
                if a != b {
                    state.net.block(a, b);
                    state.log(format!("nemesis: block {a} -> {b}"));
                }
            }
            3 | 4 => {
                let f = FaultConfig {
                    drop: rng.f64() * 0.2,
                    duplicate: rng.f64() * 0.1,
                    min_delay: Duration::ZERO,
                    max_delay: Duration::from_micros(rng.u64(0..20_000)),
                };
                state.log(format!("nemesis: faults {f:?}"));
                state.net.set_faults(f);
            }
            5 | 6 => {
                let id = rng.u64(1..=n);
                if down.iter().all(|d| d.0 != id) {
                    state.crash(id);
                    *lock(&crashes) += 1;
                    down.push((id, rt.now().add(Duration::from_millis(rng.u64(50..1000)))));
                }
            }
            _ => {
                state.net.heal();
                state.net.set_faults(FaultConfig::none());
                state.log("nemesis: heal".into());
            }
        }
    }
}
