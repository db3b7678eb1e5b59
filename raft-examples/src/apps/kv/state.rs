//! A replicated key-value store: string keys, byte values, with put, delete and
//! compare-and-set.

use std::collections::HashMap;

use bytes::Bytes;
use raft::{LogIndex, StateMachine};
use serde::{Deserialize, Serialize};

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A command of the [`KvStore`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Sets `key` to `new` if its current value is `expected` (`None`: the key is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold for the swap to happen; `None` means absent.
        expected: Option<Bytes>,
        /// The value to store.
        new: Bytes,
    },
}

/// The answer to a [`KvCommand`] once applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// A put was applied at `index`.
    Put {
        /// The log index of the command.
        index: LogIndex,
    },
    /// A delete was applied at `index`.
    Delete {
        /// The log index of the command.
        index: LogIndex,
        /// Whether the key was present.
        existed: bool,
    },
    /// A compare-and-set was applied at `index`.
    Cas {
        /// The log index of the command.
        index: LogIndex,
        /// `Ok` when the value was swapped; otherwise the value the key holds (`None`:
        /// absent), which did not match.
        result: Result<(), Option<Bytes>>,
    },
}

/// Why a key is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The key is empty.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong(usize),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => write!(f, "the key is empty"),
            KeyError::TooLong(n) => write!(f, "the key is {n} bytes long; at most {MAX_KEY_LEN} are allowed"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Checks that `key` may be stored: non-empty and at most [`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        Err(KeyError::Empty)
    } else if key.len() > MAX_KEY_LEN {
        Err(KeyError::TooLong(key.len()))
    } else {
        Ok(())
    }
}

/// The replicated map (a hash map: point reads and writes only, no ordered scans).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: HashMap<String, Bytes>,
}

impl KvStore {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;

    fn apply(&mut self, index: LogIndex, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Put { key, value } => {
                self.map.insert(key, value);
                KvResponse::Put { index }
            }
            KvCommand::Delete { key } => KvResponse::Delete { index, existed: self.map.remove(&key).is_some() },
            KvCommand::Cas { key, expected, new } => {
                let current = self.map.get(&key);
                let result = if current == expected.as_ref() {
                    self.map.insert(key, new);
                    Ok(())
                } else {
                    Err(current.cloned())
                };
                KvResponse::Cas { index, result }
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        // Encoding a map of strings and bytes into a Vec cannot fail.
        postcard::to_allocvec(&self.map).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.map = postcard::from_bytes(snapshot).map_err(|e| format!("bad KV snapshot: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()) }
    }

    fn cas(key: &str, expected: Option<&str>, new: &str) -> KvCommand {
        KvCommand::Cas {
            key: key.into(),
            expected: expected.map(|e| Bytes::copy_from_slice(e.as_bytes())),
            new: Bytes::copy_from_slice(new.as_bytes()),
        }
    }

    #[test]
    fn put_overwrites_and_delete_reports_whether_the_key_existed() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(1, put("a", "1")), KvResponse::Put { index: 1 });
        assert_eq!(kv.apply(2, put("a", "2")), KvResponse::Put { index: 2 });
        assert_eq!(kv.get("a").as_deref(), Some(&b"2"[..]));
        assert_eq!(kv.apply(3, KvCommand::Delete { key: "a".into() }), KvResponse::Delete { index: 3, existed: true });
        assert_eq!(kv.apply(4, KvCommand::Delete { key: "a".into() }), KvResponse::Delete { index: 4, existed: false });
        assert!(kv.is_empty());
    }

    #[test]
    fn cas_swaps_only_when_the_expected_value_matches() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(1, cas("k", None, "v1")), KvResponse::Cas { index: 1, result: Ok(()) });
        assert_eq!(
            kv.apply(2, cas("k", None, "v2")),
            KvResponse::Cas { index: 2, result: Err(Some(Bytes::from_static(b"v1"))) }
        );
        assert_eq!(
            kv.apply(3, cas("k", Some("nope"), "v2")),
            KvResponse::Cas { index: 3, result: Err(Some(Bytes::from_static(b"v1"))) }
        );
        assert_eq!(kv.apply(4, cas("k", Some("v1"), "v2")), KvResponse::Cas { index: 4, result: Ok(()) });
        assert_eq!(kv.get("k").as_deref(), Some(&b"v2"[..]));
        assert_eq!(kv.apply(5, cas("gone", Some("x"), "y")), KvResponse::Cas { index: 5, result: Err(None) });
        assert_eq!(kv.get("gone"), None);
    }

    #[test]
    fn values_are_arbitrary_bytes() {
        let mut kv = KvStore::default();
        let value = Bytes::from_static(&[0, 0xff, 0xfe, 10]);
        kv.apply(1, KvCommand::Put { key: "bin".into(), value: value.clone() });
        assert_eq!(kv.get("bin"), Some(value));
    }

    #[test]
    fn commands_round_trip_through_postcard() {
        for cmd in [put("a", "b"), KvCommand::Delete { key: "a".into() }, cas("a", None, "c"), cas("a", Some("c"), "")]
        {
            let bytes = postcard::to_allocvec(&cmd).unwrap();
            assert_eq!(postcard::from_bytes::<KvCommand>(&bytes).unwrap(), cmd);
        }
    }

    #[test]
    fn snapshot_restores_the_same_map_and_a_bad_one_changes_nothing() {
        let mut kv = KvStore::default();
        for i in 0..50u64 {
            kv.apply(i + 1, put(&format!("key{i}"), &i.to_string()));
        }
        let mut other = KvStore::default();
        other.restore(&kv.snapshot()).unwrap();
        assert_eq!(other, kv);
        assert_eq!(other.len(), 50);
        assert!(other.restore(&[0xff, 0xff, 0xff]).is_err());
        assert_eq!(other, kv, "a failed restore leaves the state unchanged");
    }

    #[test]
    fn keys_must_be_non_empty_and_at_most_one_kib() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert_eq!(validate_key(&"k".repeat(MAX_KEY_LEN)), Ok(()));
        assert_eq!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)), Err(KeyError::TooLong(MAX_KEY_LEN + 1)));
        assert_eq!(validate_key("ключ"), Ok(()));
    }
}
