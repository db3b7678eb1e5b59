//! Small pieces shared by cluster tests on real runtimes: a counter state machine and
//! waiting helpers.

use std::time::Duration;

use crate::core::Role;
use crate::node::Raft;
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::types::LogIndex;

/// A replicated counter: each command adds to it and the response is the new value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter(pub u64);

impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;

    fn apply(&mut self, _index: LogIndex, delta: u64) -> u64 {
        self.0 = self.0.wrapping_add(delta);
        self.0
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| "counter snapshot must be 8 bytes".to_string())?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

/// Sleeps for `d` on `rt`.
pub async fn sleep<R: Runtime>(rt: &R, d: Duration) {
    rt.sleep_until(rt.now().add(d)).await;
}

/// Polls `f` every 10 ms until it holds; panics naming `what` after 10 s.
pub async fn wait_for<R: Runtime>(rt: &R, what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        sleep(rt, Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The running node that reports itself leader, if any.
pub fn leader<SM: StateMachine>(nodes: &[Option<Raft<SM>>]) -> Option<Raft<SM>> {
    nodes.iter().flatten().find(|n| n.status().role == Role::Leader).cloned()
}
