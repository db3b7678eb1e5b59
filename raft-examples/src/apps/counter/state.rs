//! A replicated counter: the smallest useful [`StateMachine`].

use std::io::{self, Read, Write};

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

    type Snapshot = i64;

    fn snapshot(&self) -> i64 {
        self.value
    }

    fn write_snapshot(value: i64, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&value.to_le_bytes())
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), String> {
        let mut data = Vec::with_capacity(8);
        input.read_to_end(&mut data).map_err(|e| format!("reading the counter snapshot: {e}"))?;
        let bytes: [u8; 8] =
            data.try_into().map_err(|d: Vec<u8>| format!("counter snapshot must be 8 bytes, got {}", d.len()))?;
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
        let mut snap = Vec::new();
        Counter::write_snapshot(c.snapshot(), &mut snap).unwrap();
        let mut d = Counter::default();
        d.restore(&mut &snap[..]).unwrap();
        assert_eq!(d, c);
        assert!(d.restore(&mut &[1u8, 2][..]).is_err());
        assert_eq!(d, c, "a failed restore leaves the state unchanged");
    }
}
