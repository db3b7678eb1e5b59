//! Client sessions: exactly-once application of commands that clients retry (thesis
//! §6.3).
//!
//! A command may carry a **client id** and a **sequence number** ([`SessionOp::Command`]).
//! The framework keeps, in the replicated state beside the user's state machine, a
//! table of client sessions (the session table): per client, the responses of the
//! commands it has not yet acknowledged. A command whose (client, seq) was applied
//! before is answered with the recorded response and not applied again, wherever and
//! however often it is retried: through another node, after a leader change, after a
//! restart or a snapshot install.
//!
//! - **Acknowledgements.** Each command carries `acked`: the client has its answers for
//!   every sequence number up to it. Their responses are dropped; a command at or below
//!   it is not applied ([`ClientError::StaleRequest`](crate::ClientError::StaleRequest)).
//! - **Two kinds of session.** A *registered* session is opened by a log entry
//!   ([`SessionOp::Open`]); its id is that entry's index. A command for a registered id
//!   the table does not hold (it expired, or was never opened) is refused with
//!   [`ClientError::SessionExpired`](crate::ClientError::SessionExpired): the client
//!   learns that its retries are no longer covered. An *implicit* session (an id with
//!   the top bit set, [`IMPLICIT`]) is created by its first command: what a node uses
//!   for the proposals it forwards, and what [`Raft::propose_once`] uses for an
//!   idempotency key.
//! - **Idempotency keys.** A key's session holds one request ([`SessionOp::Once`]),
//!   kept with a digest of its encoded command ([`command_digest`]): a repeat with the
//!   same command gets the first response, one with another command is refused
//!   ([`ClientError::KeyReused`](crate::ClientError::KeyReused)) and not applied.
//! - **Expiry.** The leader stamps each session entry with its wall clock and the
//!   cluster's expiry settings ([`SessionEntry`]); the table's clock is the largest
//!   stamp applied. A session idle for longer than the entry's timeout is dropped when
//!   a later session entry is applied, and the least recently active ones are dropped
//!   when there are more than the entry's limit. Every replica applies the same entries,
//!   so every replica expires the same sessions at the same index.
//! - **Memory.** A session takes a 64-byte slot in a hash table (up to twice that with
//!   the table's spare capacity) and about 25 bytes in the expiry order, plus for each
//!   unacknowledged response 40 bytes, which hold its encoding when it is up to 23
//!   bytes (longer ones take an allocation of their own): some 150 to 210 bytes for a
//!   session holding one small response. A session keeps at
//!   most [`MAX_RESPONSES_PER_SESSION`] (older ones count as acknowledged); the table
//!   holds at most `Config::max_sessions` sessions.
//!
//! [`Raft::propose_once`]: crate::Raft::propose_once

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::LogIndex;

/// A client's identity in the session table. Registered sessions have the index of their
/// [`SessionOp::Open`] entry; implicit ones have the [`IMPLICIT`] bit set.
pub type ClientId = u64;

/// The bit that marks an implicit session id (created by its first command).
pub const IMPLICIT: ClientId = 1 << 63;

/// Most unacknowledged responses one session keeps; beyond it the oldest is dropped as
/// if acknowledged.
pub const MAX_RESPONSES_PER_SESSION: usize = 1024;

/// What a client asks of the session layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionOp {
    /// Open a registered session; its id is the index of this entry.
    Open,
    /// Apply `command` once for (`client`, `seq`).
    Command {
        /// The client's session.
        client: ClientId,
        /// The command's sequence number in the session (from 1).
        seq: u64,
        /// The client has the answers of every sequence number up to this one.
        acked: u64,
        /// The encoded command.
        #[serde(deserialize_with = "crate::shared_bytes::bytes")]
        command: Bytes,
    },
    /// Apply `command` once for the idempotency-key session `client`, as its one request
    /// (sequence number 1). A repeat whose command has the same `digest` gets the first
    /// response; one with another digest (the key reused for another request) is refused
    /// with [`ClientError::KeyReused`](crate::ClientError::KeyReused) and not applied.
    Once {
        /// The key's implicit session ([`client_for_key`]).
        client: ClientId,
        /// [`command_digest`] of `command`, never 0.
        digest: u64,
        /// The encoded command.
        #[serde(deserialize_with = "crate::shared_bytes::bytes")]
        command: Bytes,
    },
}

impl SessionOp {
    /// The command's bytes, if it carries one.
    pub fn command_len(&self) -> usize {
        match self {
            SessionOp::Open => 0,
            SessionOp::Command { command, .. } | SessionOp::Once { command, .. } => command.len(),
        }
    }

    /// A key's request: [`SessionOp::Once`] with the digest of `command`.
    pub fn once(client: ClientId, command: Bytes) -> SessionOp {
        SessionOp::Once { client, digest: command_digest(&command), command }
    }
}

/// A 64-bit digest of an encoded command, never 0, stable across builds and machines:
/// what tells a repeat of a key's request from another request under the same key. Not
/// cryptographic: a client that makes two of its own requests collide only gets the
/// first one's answer for the second.
pub fn command_digest(command: &[u8]) -> u64 {
    let mut h = mix(0x243f_6a88_85a3_08d3 ^ command.len() as u64);
    let mut words = command.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = mix(h ^ u64::from_le_bytes(word));
    }
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    mix(h ^ u64::from_le_bytes(last)).max(1)
}

/// splitmix64's step and finaliser: the mixing of [`command_digest`] and of the
/// table's keyed id hash.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A session operation as the log holds it: stamped by the leader that appended it with
/// its wall clock and the cluster's expiry settings, so that every replica expires the
/// same sessions at the same entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The appending leader's wall clock, in milliseconds since the Unix epoch (the
    /// simulator's virtual clock there).
    pub time_ms: u64,
    /// Sessions idle for longer than this are dropped.
    pub idle_timeout_ms: u64,
    /// Most sessions the table holds; the least recently active go first.
    pub max_sessions: u64,
    /// The operation.
    pub op: SessionOp,
}

/// The implicit session id for an idempotency key: a 64-bit FNV-1a hash of the key with
/// the [`IMPLICIT`] bit set. Stable across builds and machines.
pub fn client_for_key(key: &[u8]) -> ClientId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | IMPLICIT
}

/// One client's session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The log clock when the session was last used.
    last_active_ms: u64,
    /// Every sequence number up to this one is acknowledged (or was dropped).
    floor: u64,
    /// The encoded responses of the applied, unacknowledged commands, by sequence
    /// number (a short queue: a client has few commands in flight, and they come and go
    /// in order).
    responses: VecDeque<(u64, Recorded)>,
    /// An idempotency key's session: the digest of its request ([`SessionOp::Once`]);
    /// 0 for none.
    digest: u64,
}

/// [`Session`] as snapshot format version 2 held it (no digest).
#[derive(Deserialize)]
struct SessionV2 {
    last_active_ms: u64,
    floor: u64,
    responses: VecDeque<(u64, Recorded)>,
}

/// How many bytes of an encoded response are kept inline, without an allocation.
const INLINE: usize = 23;

/// An encoded response as the table keeps it: inline when it is short (the usual case:
/// a few varints), so that recording one costs no allocation; else in shared bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Up to [`INLINE`] bytes.
    Inline { len: u8, data: [u8; INLINE] },
    /// A longer response.
    Heap(Bytes),
}

impl Recorded {
    /// `value` encoded with postcard.
    pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Recorded, postcard::Error> {
        let mut data = [0u8; INLINE];
        match postcard::to_slice(value, &mut data) {
            Ok(used) => {
                let len = used.len() as u8;
                Ok(Recorded::Inline { len, data })
            }
            Err(postcard::Error::SerializeBufferFull) => Ok(Recorded::Heap(postcard::to_allocvec(value)?.into())),
            Err(e) => Err(e),
        }
    }

    /// The encoded bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Recorded::Inline { len, data } => &data[..usize::from(*len).min(INLINE)],
            Recorded::Heap(b) => b,
        }
    }

    fn from_slice(b: &[u8]) -> Recorded {
        if b.len() <= INLINE {
            let mut data = [0u8; INLINE];
            data[..b.len()].copy_from_slice(b);
            Recorded::Inline { len: b.len() as u8, data }
        } else {
            Recorded::Heap(Bytes::copy_from_slice(b))
        }
    }
}

impl Serialize for Recorded {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Recorded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = Bytes::deserialize(d)?;
        Ok(Recorded::from_slice(&b))
    }
}

impl Session {
    /// The recorded response of `seq`.
    fn response(&self, seq: u64) -> Option<&Recorded> {
        self.responses.binary_search_by_key(&seq, |(k, _)| *k).ok().map(|at| &self.responses[at].1)
    }
}

/// What names a session command in the table: its client and sequence number, and for
/// a key's request ([`SessionOp::Once`]) its digest (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionKey {
    pub(crate) client: ClientId,
    pub(crate) seq: u64,
    pub(crate) digest: u64,
}

impl SessionKey {
    /// The key of `op`'s command (none for [`SessionOp::Open`]).
    pub(crate) fn of(op: &SessionOp) -> Option<SessionKey> {
        op.command_parts().map(|(key, _, _)| key)
    }
}

impl SessionOp {
    /// A command's key, acknowledgement and bytes (none for [`SessionOp::Open`]); a
    /// key's request is number 1 of its session and acknowledges nothing.
    pub(crate) fn command_parts(&self) -> Option<(SessionKey, u64, &Bytes)> {
        match *self {
            SessionOp::Open => None,
            SessionOp::Command { client, seq, acked, ref command } => {
                Some((SessionKey { client, seq, digest: 0 }, acked, command))
            }
            SessionOp::Once { client, digest, ref command } => {
                Some((SessionKey { client, seq: 1, digest }, 0, command))
            }
        }
    }
}

/// What the table says of a session command about to be applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Not applied before: apply it and [`SessionTable::record`] the response.
    Fresh,
    /// Applied before: this is its encoded response.
    Duplicate(Recorded),
    /// At or below what the client acknowledged: applied before, response gone.
    Stale,
    /// A registered session the table does not hold.
    Expired,
    /// An idempotency key's request that differs from the one applied under the key.
    Mismatch,
}

/// The replicated table of client sessions (see the module docs). Kept by the apply
/// task, written into every snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionTable {
    /// The largest leader stamp applied.
    clock_ms: u64,
    sessions: HashMap<ClientId, Session, IdHash>,
    /// (last active, client), oldest first: the order of expiry.
    by_activity: BTreeSet<(u64, ClientId)>,
    /// Responses held, over all sessions.
    responses: usize,
}

/// Hashes session ids for the table. Ids are random, hashed keys or log indexes, so a
/// keyed multiply-and-mix is enough and much cheaper than SipHash on the apply path; the
/// key is drawn per table, so that ids chosen to collide under one key do not under
/// another. The table's order is never replicated (snapshots sort by id, expiry follows
/// `by_activity`), so the key need not be the same on every node.
#[derive(Clone, Debug)]
struct IdHash(u64);

impl Default for IdHash {
    fn default() -> Self {
        IdHash(fastrand::u64(..) | 1)
    }
}

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher { key: self.0, h: 0 }
    }
}

/// The hasher of [`IdHash`].
struct IdHasher {
    key: u64,
    h: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.h = mix(self.h ^ x ^ self.key);
    }

    fn finish(&self) -> u64 {
        self.h
    }
}

/// The table as a snapshot holds it: sessions in id order.
#[derive(Serialize, Deserialize)]
struct Stored {
    clock_ms: u64,
    sessions: Vec<(ClientId, Session)>,
}

/// [`Stored`] in snapshot format version 2.
#[derive(Deserialize)]
struct StoredV2 {
    clock_ms: u64,
    sessions: Vec<(ClientId, SessionV2)>,
}

impl SessionTable {
    /// How many sessions the table holds.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// How many responses the table holds, over all its sessions.
    pub(crate) fn responses(&self) -> usize {
        self.responses
    }

    /// Advances the log clock to `e`'s stamp and drops the sessions `e`'s settings
    /// expire, but not `keep` (the session just used).
    fn advance(&mut self, e: &SessionEntry, keep: Option<ClientId>) {
        self.clock_ms = self.clock_ms.max(e.time_ms);
        let cutoff = self.clock_ms.saturating_sub(e.idle_timeout_ms);
        while let Some(&(at, client)) = self.by_activity.first() {
            if Some(client) == keep || (at >= cutoff && self.sessions.len() as u64 <= e.max_sessions) {
                break;
            }
            self.by_activity.pop_first();
            if let Some(s) = self.sessions.remove(&client) {
                self.responses -= s.responses.len();
            }
        }
    }

    /// A session just created may take the table over `e`'s limit: the least recently
    /// active other one goes (the idle ones went in the `advance` before).
    fn enforce_limit(&mut self, e: &SessionEntry, keep: ClientId) {
        if self.sessions.len() as u64 > e.max_sessions {
            self.advance(e, Some(keep));
        }
    }

    /// Marks `client` active now, creating it if `create`. Activity is kept in steps of
    /// a 64th of `e`'s idle timeout (at most a second), rounded up, so that a busy
    /// session moves in the expiry order once a step rather than on every command; a
    /// session may so outlive the idle timeout by up to a step, never fall short of it.
    fn touch(&mut self, e: &SessionEntry, client: ClientId, create: bool) -> Option<&mut Session> {
        let step = (e.idle_timeout_ms / 64).clamp(1, 1000);
        let now = self.clock_ms.div_ceil(step).saturating_mul(step);
        let by_activity = &mut self.by_activity;
        match self.sessions.entry(client) {
            std::collections::hash_map::Entry::Occupied(o) => {
                let s = o.into_mut();
                if s.last_active_ms != now {
                    by_activity.remove(&(s.last_active_ms, client));
                    by_activity.insert((now, client));
                    s.last_active_ms = now;
                }
                Some(s)
            }
            std::collections::hash_map::Entry::Vacant(v) if create => {
                by_activity.insert((now, client));
                Some(v.insert(Session { last_active_ms: now, ..Session::default() }))
            }
            std::collections::hash_map::Entry::Vacant(_) => None,
        }
    }

    /// Applies an [`SessionOp::Open`] entry at `index`: session `index` exists from now.
    pub(crate) fn open(&mut self, e: &SessionEntry, index: LogIndex) {
        self.advance(e, None);
        self.touch(e, index & !IMPLICIT, true);
        self.enforce_limit(e, index & !IMPLICIT);
    }

    /// What to do with the command `key` of entry `e`, which acknowledges `acked`: the
    /// acknowledgement is taken either way, and the digest of a key's fresh request
    /// ([`SessionOp::Once`]) is kept to tell its repeats from other requests.
    pub(crate) fn check(&mut self, e: &SessionEntry, key: SessionKey, acked: u64) -> Check {
        let SessionKey { client, seq, digest } = key;
        self.advance(e, None);
        let Some(s) = self.touch(e, client, client & IMPLICIT != 0) else { return Check::Expired };
        let acked = acked.min(seq.saturating_sub(1));
        let mut dropped = 0;
        if acked > s.floor {
            s.floor = acked;
            while s.responses.front().is_some_and(|(k, _)| *k <= acked) {
                s.responses.pop_front();
                dropped += 1;
            }
        }
        let check = if seq <= s.floor {
            Check::Stale
        } else if s.responses.back().is_none_or(|(k, _)| *k < seq) {
            // Newer than anything recorded: the usual case, without a search.
            Check::Fresh
        } else if let Some(r) = s.response(seq) {
            Check::Duplicate(r.clone())
        } else {
            Check::Fresh
        };
        let check = match check {
            Check::Fresh if digest != 0 => {
                s.digest = digest;
                Check::Fresh
            }
            // A key's request recorded without a digest (by a plain session command) is
            // taken as the same request.
            Check::Duplicate(_) if digest != 0 && s.digest != 0 && s.digest != digest => Check::Mismatch,
            check => check,
        };
        self.responses -= dropped;
        self.enforce_limit(e, client);
        check
    }

    /// Records the response of (`client`, `seq`), applied after a [`Check::Fresh`].
    pub(crate) fn record(&mut self, client: ClientId, seq: u64, response: Recorded) {
        let Some(s) = self.sessions.get_mut(&client) else { return };
        let before = s.responses.len();
        if s.responses.back().is_none_or(|(k, _)| *k < seq) {
            s.responses.push_back((seq, response));
        } else {
            match s.responses.binary_search_by_key(&seq, |(k, _)| *k) {
                Ok(at) => s.responses[at].1 = response,
                Err(at) => s.responses.insert(at, (seq, response)),
            }
        }
        if s.responses.len() > MAX_RESPONSES_PER_SESSION {
            if let Some((oldest, _)) = s.responses.pop_front() {
                s.floor = s.floor.max(oldest);
            }
        }
        self.responses = self.responses + s.responses.len() - before;
    }

    /// The recorded response of `key` for a proposer that registered after its entry
    /// was applied: `Ok(Some)` when applied and kept, `Ok(None)` when not applied (yet),
    /// `Err` with the reason it cannot be told.
    pub(crate) fn response_of(&self, key: SessionKey) -> Result<Option<Recorded>, Check> {
        let SessionKey { client, seq, digest } = key;
        match self.sessions.get(&client) {
            None if client & IMPLICIT != 0 => Ok(None),
            None => Err(Check::Expired),
            Some(s) if seq <= s.floor => Err(Check::Stale),
            Some(s) => match s.response(seq) {
                Some(_) if digest != 0 && s.digest != 0 && s.digest != digest => Err(Check::Mismatch),
                r => Ok(r.cloned()),
            },
        }
    }

    /// The table encoded for a snapshot.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut sessions: Vec<(ClientId, Session)> = self.sessions.iter().map(|(&c, s)| (c, s.clone())).collect();
        sessions.sort_unstable_by_key(|(c, _)| *c);
        postcard::to_allocvec(&Stored { clock_ms: self.clock_ms, sessions }).unwrap_or_default()
    }

    /// A table read from a snapshot of format `version` (2 or later).
    pub(crate) fn decode(data: &[u8], version: u8) -> Result<Self, String> {
        let undecodable = |e: postcard::Error| format!("the session table does not decode: {e}");
        let stored: Stored = if version == 2 {
            let old: StoredV2 = postcard::from_bytes(data).map_err(undecodable)?;
            let sessions = old.sessions.into_iter().map(|(c, s)| {
                (c, Session { last_active_ms: s.last_active_ms, floor: s.floor, responses: s.responses, digest: 0 })
            });
            Stored { clock_ms: old.clock_ms, sessions: sessions.collect() }
        } else {
            postcard::from_bytes(data).map_err(undecodable)?
        };
        let mut table = SessionTable { clock_ms: stored.clock_ms, ..SessionTable::default() };
        for (client, s) in stored.sessions {
            table.by_activity.insert((s.last_active_ms, client));
            table.responses += s.responses.len();
            table.sessions.insert(client, s);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time_ms: u64, op: SessionOp) -> SessionEntry {
        SessionEntry { time_ms, idle_timeout_ms: 1000, max_sessions: 3, op }
    }

    fn cmd(client: ClientId, seq: u64, acked: u64) -> SessionOp {
        SessionOp::Command { client, seq, acked, command: Bytes::new() }
    }

    fn check(t: &mut SessionTable, time: u64, client: ClientId, seq: u64, acked: u64) -> Check {
        let e = at(time, cmd(client, seq, acked));
        t.check(&e, SessionKey { client, seq, digest: 0 }, acked)
    }

    const C: ClientId = IMPLICIT | 7;

    fn r(b: &[u8]) -> Recorded {
        Recorded::from_slice(b)
    }

    #[test]
    fn a_repeated_command_gets_the_recorded_response_and_is_not_applied_again() {
        let mut t = SessionTable::default();
        assert_eq!(check(&mut t, 1, C, 1, 0), Check::Fresh);
        t.record(C, 1, r(b"one"));
        assert_eq!(check(&mut t, 2, C, 1, 0), Check::Duplicate(r(b"one")));
        assert_eq!(check(&mut t, 3, C, 2, 0), Check::Fresh);
    }

    #[test]
    fn acknowledged_responses_are_dropped_and_their_commands_refused() {
        let mut t = SessionTable::default();
        for seq in 1..=3 {
            assert_eq!(check(&mut t, 1, C, seq, 0), Check::Fresh);
            t.record(C, seq, r(&[seq as u8]));
        }
        assert_eq!(check(&mut t, 2, C, 4, 2), Check::Fresh);
        assert_eq!(t.response_of(SessionKey { client: C, seq: 2, digest: 0 }), Err(Check::Stale));
        assert_eq!(t.response_of(SessionKey { client: C, seq: 3, digest: 0 }), Ok(Some(r(&[3]))));
        assert_eq!(check(&mut t, 3, C, 1, 0), Check::Stale);
        // An acknowledgement never covers the command that carries it.
        assert_eq!(check(&mut t, 3, C, 5, 9), Check::Fresh);
    }

    #[test]
    fn an_unknown_registered_session_is_expired_and_an_implicit_one_is_created() {
        let mut t = SessionTable::default();
        assert_eq!(check(&mut t, 1, 5, 1, 0), Check::Expired);
        assert_eq!(t.len(), 0);
        t.open(&at(1, SessionOp::Open), 5);
        assert_eq!(check(&mut t, 1, 5, 1, 0), Check::Fresh);
        assert_eq!(check(&mut t, 1, C, 1, 0), Check::Fresh);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn sessions_idle_past_the_timeout_expire_by_the_log_clock() {
        let mut t = SessionTable::default();
        t.open(&at(0, SessionOp::Open), 5);
        assert_eq!(check(&mut t, 500, C, 1, 0), Check::Fresh);
        // 1000 ms idle is not yet past the timeout.
        assert_eq!(check(&mut t, 1000, C, 2, 0), Check::Fresh);
        assert_eq!(t.response_of(SessionKey { client: 5, seq: 1, digest: 0 }), Ok(None));
        assert_eq!(check(&mut t, 1001, C, 3, 0), Check::Fresh);
        assert_eq!(t.response_of(SessionKey { client: 5, seq: 1, digest: 0 }), Err(Check::Expired));
        // A stamp behind the clock (a new leader's slower clock) does not move it back.
        assert_eq!(check(&mut t, 10, C, 4, 0), Check::Fresh);
        assert_eq!(t.clock_ms, 1001);
    }

    #[test]
    fn beyond_the_limit_the_least_recently_active_session_goes() {
        let mut t = SessionTable::default();
        // Further apart than the activity step (15 ms for a 1 s timeout).
        for (time, c) in [(100, IMPLICIT | 1), (200, IMPLICIT | 2), (300, IMPLICIT | 3)] {
            assert_eq!(check(&mut t, time, c, 1, 0), Check::Fresh);
        }
        assert_eq!(check(&mut t, 400, IMPLICIT | 1, 2, 0), Check::Fresh);
        assert_eq!(check(&mut t, 500, IMPLICIT | 4, 1, 0), Check::Fresh);
        assert_eq!(t.len(), 3);
        assert!(!t.sessions.contains_key(&(IMPLICIT | 2)));
        assert!(t.sessions.contains_key(&(IMPLICIT | 1)));
    }

    #[test]
    fn activity_moves_in_steps_so_a_session_outlives_its_idle_timeout_by_at_most_a_step() {
        // A 1 s timeout: steps of 15 ms, rounded up.
        let mut t = SessionTable::default();
        assert_eq!(check(&mut t, 1_001, C, 1, 0), Check::Fresh);
        assert_eq!(check(&mut t, 1_002, C, 2, 1), Check::Fresh);
        assert_eq!(t.by_activity.len(), 1);
        let active = t.sessions[&C].last_active_ms;
        assert_eq!(active, 1_005, "the step's end: 67 steps of 15 ms");
        // Still there a full timeout after its last command...
        assert_eq!(check(&mut t, 2_002, IMPLICIT | 8, 1, 0), Check::Fresh);
        assert!(t.sessions.contains_key(&C), "kept for at least the idle timeout");
        // ...and gone once a timeout has passed since the end of its step.
        assert_eq!(check(&mut t, 2_006, IMPLICIT | 8, 2, 1), Check::Fresh);
        assert!(!t.sessions.contains_key(&C), "dropped within a step after the timeout");
    }

    #[test]
    fn a_session_keeps_a_bounded_number_of_responses() {
        let mut t = SessionTable::default();
        let n = MAX_RESPONSES_PER_SESSION as u64 + 10;
        for seq in 1..=n {
            check(&mut t, 1, C, seq, 0);
            t.record(C, seq, r(b""));
        }
        assert_eq!(t.sessions[&C].responses.len(), MAX_RESPONSES_PER_SESSION);
        assert_eq!(t.response_of(SessionKey { client: C, seq: 10, digest: 0 }), Err(Check::Stale));
        assert_eq!(t.response_of(SessionKey { client: C, seq: 11, digest: 0 }), Ok(Some(r(b""))));
    }

    #[test]
    fn the_count_of_held_responses_follows_records_acknowledgements_expiry_and_decoding() {
        let mut t = SessionTable::default();
        let held = |t: &SessionTable| t.sessions.values().map(|s| s.responses.len()).sum::<usize>();
        for seq in 1..=4 {
            assert_eq!(check(&mut t, 100, C, seq, 0), Check::Fresh);
            t.record(C, seq, r(&[seq as u8]));
        }
        // A response recorded again for a held number replaces it.
        t.record(C, 4, r(b"again"));
        assert_eq!(check(&mut t, 100, IMPLICIT | 2, 1, 0), Check::Fresh);
        t.record(IMPLICIT | 2, 1, r(b"x"));
        assert_eq!((t.responses(), held(&t)), (5, 5));
        // Acknowledging 1..=2 drops two.
        assert_eq!(check(&mut t, 100, C, 5, 2), Check::Fresh);
        assert_eq!((t.responses(), held(&t)), (3, 3));
        let decoded = SessionTable::decode(&t.encode(), 3).unwrap();
        assert_eq!(decoded.responses(), 3);
        // Past the idle timeout both sessions go, with their responses.
        assert_eq!(check(&mut t, 5_000, IMPLICIT | 3, 1, 0), Check::Fresh);
        assert_eq!((t.len(), t.responses(), held(&t)), (1, 0, 0));
        // Over the per-session bound the oldest response goes.
        for seq in 1..=MAX_RESPONSES_PER_SESSION as u64 + 3 {
            check(&mut t, 5_000, C, seq, 0);
            t.record(C, seq, r(b""));
        }
        assert_eq!((t.responses(), held(&t)), (MAX_RESPONSES_PER_SESSION, MAX_RESPONSES_PER_SESSION));
    }

    #[test]
    fn a_key_reused_for_another_command_is_refused_and_its_first_response_kept() {
        let mut t = SessionTable::default();
        let once = |command: &'static [u8]| at(1, SessionOp::once(C, Bytes::from_static(command)));
        let key = |e: &SessionEntry| SessionKey::of(&e.op).expect("a command");
        let (first, other) = (once(b"put a=1"), once(b"put a=2"));
        assert_ne!(key(&first), key(&other), "the digests differ");
        assert_eq!(t.check(&first, key(&first), 0), Check::Fresh);
        t.record(C, 1, r(b"index 5"));
        assert_eq!(t.check(&first, key(&first), 0), Check::Duplicate(r(b"index 5")), "the same request");
        assert_eq!(t.check(&other, key(&other), 0), Check::Mismatch, "another request");
        assert_eq!(t.response_of(key(&first)), Ok(Some(r(b"index 5"))));
        assert_eq!(t.response_of(key(&other)), Err(Check::Mismatch));
        // A key's request recorded without a digest (a plain session command, or a
        // version 2 snapshot) answers any repeat.
        assert_eq!(check(&mut t, 1, IMPLICIT | 9, 1, 0), Check::Fresh);
        t.record(IMPLICIT | 9, 1, r(b"old"));
        let e = at(1, SessionOp::once(IMPLICIT | 9, Bytes::from_static(b"x")));
        assert_eq!(t.check(&e, key(&e), 0), Check::Duplicate(r(b"old")));
    }

    #[test]
    fn command_digests_are_stable_and_tell_lengths_and_bytes_apart() {
        // Fixed across builds and machines: a table in a snapshot compares against them,
        // so these values must never change.
        assert_eq!(command_digest(b""), 0x93a9_bdb5_1e5d_5285);
        assert_eq!(command_digest(b"0123456789abcdef-tail"), 0x8d76_2dcf_a5e3_12ea);
        let mut seen = std::collections::HashSet::new();
        for c in [&b""[..], b"\0", b"\0\0", b"a", b"b", b"0123456789abcdef-tail", b"0123456789abcdef-tai1"] {
            let d = command_digest(c);
            assert_ne!(d, 0);
            assert!(seen.insert(d), "{c:?} collides");
        }
    }

    #[test]
    fn a_version_2_table_decodes_with_its_responses_and_no_digests() {
        // Version 2 layout: (clock, [(client, (last active, floor, [(seq, response)]))]).
        type V2 = (u64, Vec<(ClientId, (u64, u64, Vec<(u64, Recorded)>))>);
        let old: V2 = (50, vec![(C, (40, 2, vec![(3, r(b"three"))]))]);
        let data = postcard::to_allocvec(&old).unwrap();
        let t = SessionTable::decode(&data, 2).unwrap();
        assert_eq!((t.len(), t.responses(), t.clock_ms), (1, 1, 50));
        assert_eq!(t.sessions[&C].digest, 0);
        assert_eq!(t.response_of(SessionKey { client: C, seq: 3, digest: 0 }), Ok(Some(r(b"three"))));
        assert_eq!(t.response_of(SessionKey { client: C, seq: 2, digest: 0 }), Err(Check::Stale));
    }

    #[test]
    fn the_table_survives_encoding_for_a_snapshot() {
        let mut t = SessionTable::default();
        t.open(&at(3, SessionOp::Open), 9);
        check(&mut t, 4, C, 1, 0);
        t.record(C, 1, r(b"r"));
        let back = SessionTable::decode(&t.encode(), 3).unwrap();
        assert_eq!(back, t);
        assert!(SessionTable::decode(b"\xff\xff", 3).is_err());
    }

    #[test]
    fn a_session_is_the_size_the_docs_count() {
        // The module docs' memory figures: a table slot holds the id and the session
        // (56 bytes: two clocks, the queue and a key's digest), a kept response 40 more
        // (its sequence number and up to 23 bytes of it inline, or the `Bytes` handle).
        assert_eq!(std::mem::size_of::<(ClientId, Session)>(), 64);
        assert_eq!(std::mem::size_of::<(u64, Recorded)>(), 40);
    }

    #[test]
    fn short_responses_are_kept_inline_and_long_ones_shared_and_both_round_trip() {
        let short = Recorded::encode(&(7u64, true)).unwrap();
        assert!(matches!(short, Recorded::Inline { .. }));
        assert_eq!(postcard::from_bytes::<(u64, bool)>(short.as_slice()).unwrap(), (7, true));
        let long = Recorded::encode(&vec![9u8; 100]).unwrap();
        assert!(matches!(long, Recorded::Heap(_)));
        assert_eq!(postcard::from_bytes::<Vec<u8>>(long.as_slice()).unwrap(), vec![9u8; 100]);
        for x in [short, long] {
            let back: Recorded = postcard::from_bytes(&postcard::to_allocvec(&x).unwrap()).unwrap();
            assert_eq!(back, x);
        }
    }

    #[test]
    fn keys_map_to_stable_implicit_ids() {
        assert_eq!(client_for_key(b"a"), client_for_key(b"a"));
        assert_ne!(client_for_key(b"a"), client_for_key(b"b"));
        assert_ne!(client_for_key(b"") & IMPLICIT, 0);
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(client_for_key(b"a"), 0xaf63_dc4c_8601_ec8c | IMPLICIT);
    }
}
