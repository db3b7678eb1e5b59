//! A replicated counter: the smallest useful [`StateMachine`].

use raft::{LogIndex, StateMachine};

/// A counter; each command adds a (possibly negative) delta and answers the new value.
/// Arithmetic wraps around at the bounds of `i64`, the same on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    value: i64,
}

impl Counter {
    /// The current value.
    pub fn value(&self) -> i64 {
        self.value
    }
}

impl StateMachine for Counter {
    type Command = i64;
    type Response = i64;

    fn apply(&mut self, _index: LogIndex, delta: i64) -> i64 {
        self.value = self.value.wrapping_add(delta);
        self.value
    }

    fn snapshot(&self) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] =
            snapshot.try_into().map_err(|_| format!("counter snapshot must be 8 bytes, got {}", snapshot.len()))?;
        self.value = i64::from_le_bytes(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_applies_deltas_and_restores_snapshots() {
        let mut c = Counter::default();
        assert_eq!(c.apply(1, 5), 5);
        assert_eq!(c.apply(2, 3), 8);
        assert_eq!(c.apply(3, -10), -2);
        assert_eq!(c.apply(4, 10), 8);
        let snap = c.snapshot();
        let mut d = Counter::default();
        d.restore(&snap).unwrap();
        assert_eq!(d, c);
        assert!(d.restore(&[1, 2]).is_err());
        assert_eq!(d, c, "a failed restore leaves the state unchanged");
    }
}
