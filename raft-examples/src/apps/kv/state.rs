//! A replicated key-value store: string keys, byte values, with put, delete and
//! compare-and-set.

use std::io::{self, BufReader, BufWriter, Read, Write};

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// The replicated map: a persistent hash map (point reads and writes only, no ordered
/// scans), so a snapshot is a constant-time clone that shares the map's structure, and
/// `apply` goes on while the clone is written out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: imbl::HashMap<String, Bytes>,
}

/// The first bytes of a kv snapshot stream, with its format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"raftkv\x00\x01";

/// The most bytes one key or value of a snapshot may claim, so a damaged length cannot
/// make `restore` allocate without bound (values are limited far below this).
const MAX_SNAPSHOT_FIELD: u64 = 1 << 30;

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

    type Snapshot = imbl::HashMap<String, Bytes>;

    fn snapshot(&self) -> Self::Snapshot {
        self.map.clone()
    }

    /// The stream: the magic, the number of keys (u64), then per key its length (u64),
    /// its bytes, the value's length (u64) and its bytes, little-endian.
    fn write_snapshot(map: Self::Snapshot, out: &mut dyn Write) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        out.write_all(SNAPSHOT_MAGIC)?;
        out.write_all(&(map.len() as u64).to_le_bytes())?;
        for (key, value) in &map {
            out.write_all(&(key.len() as u64).to_le_bytes())?;
            out.write_all(key.as_bytes())?;
            out.write_all(&(value.len() as u64).to_le_bytes())?;
            out.write_all(value)?;
        }
        out.flush()
    }

    fn restore(&mut self, input: &mut dyn Read) -> Result<(), String> {
        let mut input = BufReader::with_capacity(1 << 16, input);
        let bad = |what: &str, e: io::Error| format!("bad KV snapshot ({what}): {e}");
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(|e| bad("magic", e))?;
        if &magic != SNAPSHOT_MAGIC {
            return Err("bad KV snapshot: not a kv snapshot of this version".into());
        }
        let count = read_u64(&mut input).map_err(|e| bad("key count", e))?;
        let mut map = imbl::HashMap::new();
        for _ in 0..count {
            let key = read_field(&mut input).map_err(|e| bad("key", e))?;
            let key = String::from_utf8(key).map_err(|e| format!("bad KV snapshot: a key is not UTF-8: {e}"))?;
            let value = read_field(&mut input).map_err(|e| bad("value", e))?;
            map.insert(key, Bytes::from(value));
        }
        // Reading to the end lets the framework's reader check the stream's checksum.
        let mut rest = Vec::new();
        input.read_to_end(&mut rest).map_err(|e| bad("end", e))?;
        if !rest.is_empty() {
            return Err(format!("bad KV snapshot: {} bytes after the last key", rest.len()));
        }
        self.map = map;
        Ok(())
    }
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_field(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_u64(input)?;
    if len > MAX_SNAPSHOT_FIELD {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a field claims {len} bytes")));
    }
    // A field of up to 1 MiB (every key and value the app accepts by default) is read
    // into a buffer of its exact size; a larger claim grows its buffer as the data
    // arrives, so a damaged length cannot make this allocate what the stream lacks.
    let exact = usize::try_from(len).ok().filter(|&n| n <= 1 << 20);
    let mut data = Vec::new();
    match exact {
        Some(n) => {
            data.resize(n, 0);
            input.read_exact(&mut data)?;
        }
        None => {
            input.take(len).read_to_end(&mut data)?;
            if data.len() as u64 != len {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ends inside a field"));
            }
        }
    }
    Ok(data)
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
        kv.apply(51, KvCommand::Delete { key: "key7".into() });
        let view = kv.snapshot();
        kv.apply(52, put("after", "the view"));
        let mut stream = Vec::new();
        KvStore::write_snapshot(view, &mut stream).unwrap();
        let mut other = KvStore::default();
        other.restore(&mut &stream[..]).unwrap();
        assert_eq!(other.len(), 49, "the view is the state when it was taken, the delete included");
        assert_eq!(other.get("key7"), None);
        assert_eq!(other.get("after"), None);
        assert_eq!(other.get("key8").as_deref(), Some(&b"8"[..]));
        let before = other.clone();
        assert!(other.restore(&mut &[0xffu8, 0xff, 0xff][..]).is_err());
        assert!(other.restore(&mut &stream[..stream.len() - 1]).is_err(), "a cut stream");
        let mut long = stream.clone();
        long.push(0);
        assert!(other.restore(&mut &long[..]).is_err(), "trailing bytes");
        assert_eq!(other, before, "a failed restore leaves the state unchanged");
    }

    #[test]
    fn keys_must_be_non_empty_and_at_most_one_kib() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert_eq!(validate_key(&"k".repeat(MAX_KEY_LEN)), Ok(()));
        assert_eq!(validate_key(&"k".repeat(MAX_KEY_LEN + 1)), Err(KeyError::TooLong(MAX_KEY_LEN + 1)));
        assert_eq!(validate_key("ключ"), Ok(()));
    }
}
