//! A conformance suite for the snapshots of a [`LogStore`]: its [`SnapshotStore`] (from
//! [`LogStore::snapshots`]) and [`LogStore::reset_to`].
//!
//! [`run_snapshot_conformance`] runs every check that needs only one open store;
//! [`run_snapshot_reopen_conformance`] runs the checks that close a store and open the
//! same data again, for stores that persist. [`corrupted_snapshot_fails_its_reader`]
//! needs a way to damage a stored snapshot, which only the store's own tests have, so no
//! runner includes it. Each check is a public function, so a store's own tests can run
//! them one by one. A failing check panics with a message that starts with
//! ``SnapshotStore conformance check `NAME` failed``, naming the check.
//!
//! The checks test the contract documented on [`SnapshotStore`], [`SnapshotWriter`] and
//! [`LogStore::reset_to`] and nothing more: where the contract leaves a choice to the
//! store (whether a replaced snapshot can still be read, whether a purge of the log
//! survives a reopen at once), the checks accept every allowed outcome.
//!
//! ```ignore
//! futures::executor::block_on(run_snapshot_conformance(|| async { MemStore::new() }));
//! futures::executor::block_on(run_snapshot_reopen_conformance(
//!     || async { MemStore::new() },
//!     |store: MemStore| async move { store.clone() },
//! ));
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::error::StoreError;
use crate::membership::Membership;
use crate::snapshot::{SnapshotMeta, SnapshotStore, SnapshotWriter};
use crate::storage::{InitialState, LogStore};
use crate::testing::conformance::sample_entries;
use crate::types::{Entry, HardState, LogId, LogIndex, Term};

/// Runs every single-store check, each on a new empty store made by `fresh`.
pub async fn run_snapshot_conformance<S, F, Fut>(mut fresh: F)
where
    S: LogStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
{
    empty_store_has_no_snapshot(fresh().await).await;
    finished_snapshot_is_latest_with_its_meta(fresh().await).await;
    finished_snapshot_reads_back_through_open(fresh().await).await;
    read_chunk_returns_the_requested_range(fresh().await).await;
    empty_snapshot_reads_back_empty(fresh().await).await;
    dropped_writer_leaves_the_previous_snapshot(fresh().await).await;
    newer_snapshot_becomes_latest(fresh().await).await;
    snapshot_at_the_same_position_replaces_the_latest(fresh().await).await;
    older_snapshot_is_refused(fresh().await).await;
    replaced_snapshot_is_never_read_as_wrong_data(fresh().await).await;
    unknown_snapshot_is_an_error(fresh().await).await;
    reset_to_a_held_entry_keeps_the_entries_after_it(fresh().await).await;
    reset_to_a_position_not_in_the_log_empties_it(fresh().await).await;
    reset_to_at_or_below_prev_is_a_noop(fresh().await).await;
}

/// Runs every check that reopens a store, each on a new empty store made by `fresh`.
/// `reopen` closes the store it is given and opens the same data again, as a process
/// restart would.
pub async fn run_snapshot_reopen_conformance<S, F, Fut, R, RFut>(mut fresh: F, mut reopen: R)
where
    S: LogStore,
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    finished_snapshot_survives_reopen(fresh().await, &mut reopen).await;
    dropped_writer_leaves_the_previous_snapshot_after_reopen(fresh().await, &mut reopen).await;
    reset_to_survives_reopen(fresh().await, &mut reopen).await;
}

/// Sample snapshot data: `len` pseudo-random bytes from `seed`, so that data read from a
/// wrong offset or from another snapshot does not match.
pub fn sample_snapshot_data(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

/// A joint membership with learners, so that every field of it has to round-trip.
fn sample_membership(seed: u64) -> Membership {
    let mut m = Membership::new([1, 2, 3]);
    m.voters_outgoing = Some([1, 2, 4 + seed].into_iter().collect());
    m.learners.insert(10 + seed);
    m
}

fn id(term: Term, index: LogIndex) -> LogId {
    LogId { term, index }
}

/// The sizes of the successive writes a snapshot's data is written in (cycled), from a
/// single byte to more than a megabyte.
const WRITE_SIZES: [usize; 6] = [1, 13, 4096, 65_537, 7, 1_048_579];

/// What a snapshot was written with, to compare the store's answers against.
struct Written {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Reports the outcome of one named check.
struct Check(&'static str);

impl Check {
    fn fail(&self, msg: std::fmt::Arguments<'_>) -> ! {
        panic!("SnapshotStore conformance check `{}` failed: {msg}", self.0)
    }

    fn ok<T>(&self, what: &str, r: Result<T, StoreError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(format_args!("{what}: unexpected error: {e}")),
        }
    }

    fn io<T>(&self, what: &str, r: io::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(format_args!("{what}: unexpected I/O error: {e}")),
        }
    }

    fn eq<T: PartialEq + Debug>(&self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format_args!("{what}: got {got:?}, want {want:?}"));
        }
    }

    /// Like [`eq`](Self::eq) for byte strings, reporting lengths and the first difference
    /// instead of the bytes.
    fn same_bytes(&self, what: &str, got: &[u8], want: &[u8]) {
        if got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            self.fail(format_args!(
                "{what}: got {} bytes, want {}; they differ from byte {at} on",
                got.len(),
                want.len()
            ));
        }
    }

    fn holds(&self, what: &str, cond: bool) {
        if !cond {
            self.fail(format_args!("{what}"));
        }
    }

    fn is_err<T>(&self, what: &str, r: Result<T, StoreError>) {
        if r.is_ok() {
            self.fail(format_args!("{what}: expected an error, got Ok"));
        }
    }

    fn invalid<T>(&self, what: &str, r: Result<T, StoreError>) {
        match r {
            Err(StoreError::Invalid(_)) => {}
            Err(e) => self.fail(format_args!("{what}: expected StoreError::Invalid, got {e}")),
            Ok(_) => self.fail(format_args!("{what}: expected StoreError::Invalid, got Ok")),
        }
    }

    /// Creates a snapshot ending at `last`, writes `data` into it in pieces of
    /// [`WRITE_SIZES`] and returns the writer unfinished.
    fn start(
        &self,
        snaps: &dyn SnapshotStore,
        last: LogId,
        membership: &Membership,
        membership_index: LogIndex,
        data: &[u8],
    ) -> Box<dyn SnapshotWriter> {
        let what = format!("create({last:?})");
        let mut w = self.ok(&what, snaps.create(last, membership, membership_index));
        let mut rest = data;
        for &size in WRITE_SIZES.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            self.io(&format!("writing the data of the snapshot at {last:?}"), w.write_all(piece));
            rest = tail;
        }
        self.io(&format!("flushing the snapshot at {last:?}"), w.flush());
        w
    }

    /// Writes and finishes a snapshot ending at `last` with sample data of `len` bytes
    /// (seeded by the index), and checks the metadata `finish` returns.
    fn save(&self, snaps: &dyn SnapshotStore, last: LogId, membership_index: LogIndex, len: usize) -> Written {
        let data = sample_snapshot_data(last.index ^ (last.term << 32) ^ len as u64, len);
        let membership = sample_membership(last.index);
        let w = self.start(snaps, last, &membership, membership_index, &data);
        let meta = self.ok(&format!("finish of the snapshot at {last:?}"), w.finish());
        let want = SnapshotMeta {
            last,
            membership,
            membership_index,
            size: data.len() as u64,
            checksum: crc32c::crc32c(&data),
        };
        self.eq(&format!("metadata finish returned for the snapshot at {last:?}"), &meta, &want);
        Written { meta, data }
    }

    fn latest(&self, snaps: &dyn SnapshotStore) -> Option<SnapshotMeta> {
        self.ok("latest", snaps.latest())
    }

    /// Reads snapshot `last` whole through `open`.
    fn read_all(&self, snaps: &dyn SnapshotStore, last: LogId) -> Vec<u8> {
        let mut r = self.ok(&format!("open({last:?})"), snaps.open(last));
        let mut data = Vec::new();
        self.io(&format!("reading the snapshot at {last:?} through open"), r.read_to_end(&mut data));
        data
    }

    /// Checks that `want` is the latest snapshot and reads back exactly, through `open`
    /// and through `read_chunk`.
    fn is_latest(&self, snaps: &dyn SnapshotStore, what: &str, want: &Written) {
        self.eq(&format!("{what}: latest"), self.latest(snaps).as_ref(), Some(&want.meta));
        let last = want.meta.last;
        self.same_bytes(&format!("{what}: data read through open"), &self.read_all(snaps, last), &want.data);
        let chunk =
            self.ok(&format!("{what}: read_chunk of the whole data"), snaps.read_chunk(last, 0, want.data.len() + 1));
        self.same_bytes(&format!("{what}: data read through read_chunk"), &chunk, &want.data);
    }

    async fn state<S: LogStore>(&self, store: &mut S) -> InitialState {
        self.ok("initial_state", store.initial_state().await)
    }

    async fn append<S: LogStore>(&self, store: &mut S, entries: &[Entry]) {
        let what =
            format!("append of {}..={}", entries.first().map_or(0, |e| e.index), entries.last().map_or(0, |e| e.index));
        self.ok(&what, store.append(entries).await);
    }

    /// Checks that the log holds exactly `want` after `prev`, and nothing beyond.
    async fn holds_log<S: LogStore>(&self, store: &mut S, what: &str, prev: LogId, want: &[Entry]) {
        let state = self.state(store).await;
        let last = want.last().map_or(prev, |e| id(e.term, e.index));
        self.eq(&format!("{what}: prev"), state.prev, prev);
        self.eq(&format!("{what}: last"), state.last, last);
        if !want.is_empty() {
            let got = self.ok(&format!("{what}: entries"), store.entries(prev.index + 1, last.index + 1).await);
            self.eq(&format!("{what}: entries"), got, want.to_vec());
        }
        for (start, end) in [(prev.index, prev.index + 1), (last.index + 1, last.index + 2)] {
            if start == 0 {
                continue;
            }
            match store.entries(start, end).await {
                Err(StoreError::Unavailable { .. }) => {}
                other => self.fail(format_args!(
                    "{what}: entries({start}, {end}): expected StoreError::Unavailable, got {other:?}"
                )),
            }
        }
    }
}

/// A new store has no snapshot: `latest` is `None`, and `open` and `read_chunk` fail.
pub async fn empty_store_has_no_snapshot<S: LogStore>(store: S) {
    let c = Check("empty_store_has_no_snapshot");
    let snaps = store.snapshots();
    c.eq("latest of a new store", c.latest(&*snaps), None);
    for last in [id(0, 0), id(1, 1), id(3, 10)] {
        c.is_err(&format!("open({last:?}) of a new store"), snaps.open(last).map(|_| ()));
        c.is_err(&format!("read_chunk({last:?}, 0, 10) of a new store"), snaps.read_chunk(last, 0, 10));
    }
}

/// Nothing is visible before `finish`; once it returns, the snapshot is the latest, with
/// its last entry, membership, membership index, size and checksum (CRC-32C), as `finish`
/// returned them.
pub async fn finished_snapshot_is_latest_with_its_meta<S: LogStore>(store: S) {
    let c = Check("finished_snapshot_is_latest_with_its_meta");
    let snaps = store.snapshots();
    let last = id(3, 10);
    let data = sample_snapshot_data(1, 5000);
    let membership = sample_membership(1);
    let w = c.start(&*snaps, last, &membership, 7, &data);
    c.eq("latest while the first snapshot is being written", c.latest(&*snaps), None);
    c.is_err("open of a snapshot being written", snaps.open(last).map(|_| ()));
    c.is_err("read_chunk of a snapshot being written", snaps.read_chunk(last, 0, 10));
    let meta = c.ok("finish", w.finish());
    let want = SnapshotMeta { last, membership, membership_index: 7, size: 5000, checksum: crc32c::crc32c(&data) };
    c.eq("metadata finish returned", &meta, &want);
    c.is_latest(&*snaps, "after finish", &Written { meta, data });
    // A new handle sees it too.
    let snaps = store.snapshots();
    c.eq("latest through a new handle", c.latest(&*snaps), Some(want));
}

/// A finished snapshot (here more than a megabyte, written in pieces of many sizes)
/// reads back byte for byte through `open`, whatever the sizes of the reads (an empty
/// read included), and reaches its end with `Ok(0)`; readers are independent of each
/// other and can be opened again.
pub async fn finished_snapshot_reads_back_through_open<S: LogStore>(store: S) {
    let c = Check("finished_snapshot_reads_back_through_open");
    let snaps = store.snapshots();
    let big = c.save(&*snaps, id(2, 40), 3, 1_500_003);
    c.is_latest(&*snaps, "a snapshot of 1.5 MB", &big);

    // Reads of odd sizes, with empty reads in between, through two readers at once.
    let last = big.meta.last;
    let mut a = c.ok("open", snaps.open(last));
    let mut b = c.ok("a second open", snaps.open(last));
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    let sizes = [0usize, 1, 3, 0, 511, 4096, 70_001, 9, 0, 1 << 20];
    let mut buf = vec![0u8; 1 << 20];
    let mut i = 0;
    let mut done = (false, false);
    while !(done.0 && done.1) {
        let size = sizes[i % sizes.len()];
        i += 1;
        for (reader, got, done) in [(&mut a, &mut got_a, &mut done.0), (&mut b, &mut got_b, &mut done.1)] {
            if *done {
                continue;
            }
            let n = c.io(&format!("a read of {size} bytes at {}", got.len()), reader.read(&mut buf[..size]));
            c.holds(&format!("a read of {size} bytes returned {n}"), n <= size);
            got.extend_from_slice(&buf[..n]);
            *done = n == 0 && size > 0;
        }
    }
    c.same_bytes("data read in reads of many sizes", &got_a, &big.data);
    c.same_bytes("data read through a second reader at the same time", &got_b, &big.data);
    let n = c.io("a read after the end", a.read(&mut buf[..10]));
    c.eq("bytes of a read after the end", n, 0);
    drop((a, b));
    c.same_bytes("data read through a later open", &c.read_all(&*snaps, last), &big.data);
}

/// `read_chunk(last, offset, len)` returns the `len` bytes of the data from `offset`, or
/// fewer at the end of the data: exactly the tail when the range runs past the end, and
/// nothing from the end on. Chunks read one after the other make up the whole data.
pub async fn read_chunk_returns_the_requested_range<S: LogStore>(store: S) {
    let c = Check("read_chunk_returns_the_requested_range");
    let snaps = store.snapshots();
    let w = c.save(&*snaps, id(4, 25), 25, 200_017);
    let (last, data) = (w.meta.last, &w.data);
    let size = data.len() as u64;
    for (offset, len) in [
        (0, 0),
        (0, 1),
        (0, 10),
        (1, 1),
        (7, 4096),
        (100_000, 0),
        (100_000, 65_536),
        (size - 1, 1),
        (size - 1, 100),
        (size - 10, 10),
        (size - 10, 11),
        (0, data.len()),
        (0, data.len() + 1),
        (5, data.len() * 2),
        (size, 0),
        (size, 1),
        (size, 100),
    ] {
        let what = format!("read_chunk({last:?}, {offset}, {len}) of {size} bytes");
        let got = c.ok(&what, snaps.read_chunk(last, offset, len));
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        c.same_bytes(&what, &got, &data[start..end]);
    }
    // Past the end the contract promises no bytes; a store may also refuse the request.
    for offset in [size + 1, size + 1_000_000, u64::MAX / 2, u64::MAX] {
        let what = format!("read_chunk({last:?}, {offset}, 10) past the end of {size} bytes");
        if let Ok(got) = snaps.read_chunk(last, offset, 10) {
            c.eq(&what, got.len(), 0);
        }
    }
    for chunk in [1000usize, 65_536, 99_999] {
        let mut whole = Vec::new();
        loop {
            let what = format!("read_chunk({last:?}, {}, {chunk})", whole.len());
            let got = c.ok(&what, snaps.read_chunk(last, whole.len() as u64, chunk));
            if got.is_empty() {
                break;
            }
            c.holds(&format!("{what} returned {} bytes", got.len()), got.len() <= chunk);
            whole.extend_from_slice(&got);
        }
        c.same_bytes(&format!("data read in chunks of {chunk} bytes"), &whole, data);
    }
}

/// A snapshot with no data is valid: size 0, the checksum of no bytes, read back empty.
pub async fn empty_snapshot_reads_back_empty<S: LogStore>(store: S) {
    let c = Check("empty_snapshot_reads_back_empty");
    let snaps = store.snapshots();
    let w = c.save(&*snaps, id(1, 3), 0, 0);
    c.eq("size and checksum of an empty snapshot", (w.meta.size, w.meta.checksum), (0, crc32c::crc32c(&[])));
    c.is_latest(&*snaps, "an empty snapshot", &w);
    c.eq("read_chunk(0, 10) of an empty snapshot", c.ok("read_chunk", snaps.read_chunk(w.meta.last, 0, 10)), vec![]);
    // A non-empty snapshot may follow it, and an empty one that one.
    let full = c.save(&*snaps, id(1, 5), 4, 3000);
    c.is_latest(&*snaps, "a snapshot after an empty one", &full);
    let empty = c.save(&*snaps, id(2, 9), 9, 0);
    c.is_latest(&*snaps, "an empty snapshot after a full one", &empty);
}

/// A writer dropped without `finish` leaves no snapshot behind, and the previous latest
/// one stays the latest and readable; a writer still being written changes nothing
/// either. A snapshot at the same position can be written afterwards.
pub async fn dropped_writer_leaves_the_previous_snapshot<S: LogStore>(store: S) {
    let c = Check("dropped_writer_leaves_the_previous_snapshot");
    let snaps = store.snapshots();
    let w = c.start(&*snaps, id(1, 4), &sample_membership(0), 2, &sample_snapshot_data(3, 10_000));
    drop(w);
    c.eq("latest after dropping the only writer", c.latest(&*snaps), None);
    c.is_err("open of a dropped snapshot", snaps.open(id(1, 4)).map(|_| ()));

    let first = c.save(&*snaps, id(1, 4), 2, 2000);
    c.is_latest(&*snaps, "after finishing a snapshot", &first);
    for (last, len) in [(id(2, 9), 0), (id(2, 9), 1_200_000), (id(1, 4), 500)] {
        let what = format!("while a writer of {len} bytes at {last:?} is open");
        let w = c.start(&*snaps, last, &sample_membership(5), 1, &sample_snapshot_data(4, len));
        c.is_latest(&*snaps, &what, &first);
        drop(w);
        c.is_latest(&*snaps, &format!("after dropping a writer of {len} bytes at {last:?}"), &first);
    }
    c.is_err("open of a dropped newer snapshot", snaps.open(id(2, 9)).map(|_| ()));
    let next = c.save(&*snaps, id(2, 9), 8, 3000);
    c.is_latest(&*snaps, "after finishing a snapshot at the dropped writer's position", &next);
}

/// A snapshot with a larger last index, once finished, is the latest; every later newer
/// one replaces it in turn.
pub async fn newer_snapshot_becomes_latest<S: LogStore>(store: S) {
    let c = Check("newer_snapshot_becomes_latest");
    let snaps = store.snapshots();
    let mut prev = c.save(&*snaps, id(1, 5), 5, 4000);
    c.is_latest(&*snaps, "after the first snapshot", &prev);
    for (last, len) in [(id(1, 6), 10), (id(3, 20), 70_000), (id(3, 21), 0), (id(7, 1000), 1_100_000)] {
        let next = c.save(&*snaps, last, last.index - 1, len);
        c.is_latest(&*snaps, &format!("after a snapshot at {last:?} replaced the one at {:?}", prev.meta.last), &next);
        prev = next;
    }
}

/// A snapshot finished at the same last entry as the latest one (its index is not larger,
/// but not smaller either) becomes the latest, with its own data.
pub async fn snapshot_at_the_same_position_replaces_the_latest<S: LogStore>(store: S) {
    let c = Check("snapshot_at_the_same_position_replaces_the_latest");
    let snaps = store.snapshots();
    let first = c.save(&*snaps, id(2, 8), 8, 3000);
    c.is_latest(&*snaps, "after the first snapshot", &first);
    let second = c.save(&*snaps, id(2, 8), 8, 5001);
    c.is_latest(&*snaps, "after a second snapshot at the same position", &second);
}

/// A snapshot with a smaller last index than one finished before is refused with
/// `Invalid` (at `finish`, or already at `create`) and discarded: the newer one stays the
/// latest, with its data. This holds too for a writer created before the newer snapshot
/// was finished.
pub async fn older_snapshot_is_refused<S: LogStore>(store: S) {
    let c = Check("older_snapshot_is_refused");
    let snaps = store.snapshots();
    // Two writers race; the newer one finishes first.
    let old_data = sample_snapshot_data(9, 3000);
    let old = c.start(&*snaps, id(1, 5), &sample_membership(0), 5, &old_data);
    let newer = c.save(&*snaps, id(2, 9), 9, 2000);
    c.invalid("finish of an older snapshot created before the newer one was finished", old.finish());
    c.is_latest(&*snaps, "after refusing the older snapshot", &newer);

    // An older one started after the newer one was finished.
    for (last, len) in [(id(1, 5), 100), (id(2, 8), 0), (id(1, 1), 1_100_000)] {
        let what = format!("an older snapshot at {last:?}");
        match snaps.create(last, &sample_membership(0), 1) {
            Err(StoreError::Invalid(_)) => {}
            Err(e) => c.fail(format_args!("create of {what}: expected Ok or StoreError::Invalid, got {e}")),
            Ok(mut w) => {
                c.io(&format!("writing {what}"), w.write_all(&sample_snapshot_data(2, len)));
                c.invalid(&format!("finish of {what}"), w.finish());
            }
        }
        c.is_latest(&*snaps, &format!("after refusing {what}"), &newer);
        c.is_err(&format!("open of the refused {what}"), snaps.open(last).map(|_| ()));
    }
    let next = c.save(&*snaps, id(2, 10), 10, 10);
    c.is_latest(&*snaps, "a newer snapshot after the refusals", &next);
}

/// Once a newer snapshot is finished, the replaced one is either still held and reads
/// back exactly, or `open` and `read_chunk` report it `Unavailable`; a reader opened
/// before the replacement yields its data exactly or fails with an error, never wrong
/// data.
pub async fn replaced_snapshot_is_never_read_as_wrong_data<S: LogStore>(store: S) {
    let c = Check("replaced_snapshot_is_never_read_as_wrong_data");
    let snaps = store.snapshots();
    let old = c.save(&*snaps, id(1, 5), 5, 300_000);
    let mut before = c.ok("open before the replacement", snaps.open(old.meta.last));
    let mut first = vec![0u8; 1000];
    let n = c.io("a read before the replacement", before.read(&mut first));
    first.truncate(n);
    c.same_bytes("the first read before the replacement", &first, &old.data[..n]);
    let untouched = c.ok("another open before the replacement", snaps.open(old.meta.last));

    let new = c.save(&*snaps, id(2, 9), 9, 200_000);
    c.is_latest(&*snaps, "after the replacement", &new);
    for (what, mut reader, mut got) in [("half read", before, first), ("unread", untouched, Vec::new())] {
        if reader.read_to_end(&mut got).is_ok() {
            c.same_bytes(&format!("data of a {what} reader opened before the replacement"), &got, &old.data);
        }
    }
    match snaps.open(old.meta.last) {
        Err(StoreError::Unavailable { .. }) => {}
        Err(e) => c.fail(format_args!("open of the replaced snapshot: expected Ok or Unavailable, got {e}")),
        Ok(mut r) => {
            let mut got = Vec::new();
            c.io("reading the replaced snapshot, still held", r.read_to_end(&mut got));
            c.same_bytes("data of the replaced snapshot, still held", &got, &old.data);
        }
    }
    match snaps.read_chunk(old.meta.last, 1000, 5000) {
        Err(StoreError::Unavailable { .. }) => {}
        Err(e) => c.fail(format_args!("read_chunk of the replaced snapshot: expected Ok or Unavailable, got {e}")),
        Ok(got) => c.same_bytes("read_chunk of the replaced snapshot, still held", &got, &old.data[1000..6000]),
    }
    c.is_latest(&*snaps, "at the end", &new);
}

/// `open` and `read_chunk` of a snapshot the store does not hold (another index, or the
/// same index in another term) fail.
pub async fn unknown_snapshot_is_an_error<S: LogStore>(store: S) {
    let c = Check("unknown_snapshot_is_an_error");
    let snaps = store.snapshots();
    let held = c.save(&*snaps, id(2, 9), 9, 1000);
    for last in [id(2, 8), id(2, 10), id(1, 9), id(3, 9), id(0, 0), id(u64::MAX, u64::MAX)] {
        c.is_err(&format!("open({last:?}) with {:?} held", held.meta.last), snaps.open(last).map(|_| ()));
        c.is_err(&format!("read_chunk({last:?}, 0, 10) with {:?} held", held.meta.last), snaps.read_chunk(last, 0, 10));
    }
    c.is_latest(&*snaps, "after asking for unknown snapshots", &held);
}

/// `reset_to` a position whose entry the log holds, with the same term, removes the
/// entries up to it and keeps the ones after it, as a purge does; appends continue after
/// the last entry; the hard state is untouched.
pub async fn reset_to_a_held_entry_keeps_the_entries_after_it<S: LogStore>(mut store: S) {
    let c = Check("reset_to_a_held_entry_keeps_the_entries_after_it");
    let all: Vec<Entry> = sample_entries(1, 1..=4).into_iter().chain(sample_entries(2, 5..=12)).collect();
    c.append(&mut store, &all).await;
    let hs = HardState { term: 2, voted_for: Some(1) };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);
    c.ok("reset_to(2, 6)", store.reset_to(id(2, 6)).await);
    c.holds_log(&mut store, "after reset_to(2, 6)", id(2, 6), &all[6..]).await;
    c.ok("reset_to(1, 4) below prev", store.reset_to(id(1, 4)).await);
    c.ok("reset_to(2, 12) at the last entry", store.reset_to(id(2, 12)).await);
    c.holds_log(&mut store, "after reset_to(2, 12)", id(2, 12), &[]).await;
    let next = sample_entries(3, 13..=14);
    c.append(&mut store, &next).await;
    c.holds_log(&mut store, "after appending", id(2, 12), &next).await;
    c.eq("hard state", c.state(&mut store).await.hard_state, hs);
}

/// `reset_to` a position the log does not hold (beyond its last entry, or an index it
/// holds in another term) empties the log: `prev` and `last` are that position, and the
/// next append goes right after it; the hard state is untouched.
pub async fn reset_to_a_position_not_in_the_log_empties_it<S: LogStore>(mut store: S) {
    let c = Check("reset_to_a_position_not_in_the_log_empties_it");
    c.ok("reset_to(1, 3) of an empty log", store.reset_to(id(1, 3)).await);
    c.holds_log(&mut store, "after resetting an empty log", id(1, 3), &[]).await;
    let all = sample_entries(2, 4..=10);
    c.append(&mut store, &all).await;
    let hs = HardState { term: 4, voted_for: None };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);

    c.ok("reset_to(3, 7), a conflicting term", store.reset_to(id(3, 7)).await);
    c.holds_log(&mut store, "after reset_to(3, 7)", id(3, 7), &[]).await;
    c.invalid("append at the old end", store.append(&sample_entries(3, 11..=11)).await);
    let next = sample_entries(3, 8..=9);
    c.append(&mut store, &next).await;
    c.holds_log(&mut store, "after appending after the reset", id(3, 7), &next).await;

    c.ok("reset_to(4, 30), beyond the last entry", store.reset_to(id(4, 30)).await);
    c.holds_log(&mut store, "after reset_to(4, 30)", id(4, 30), &[]).await;
    let next = sample_entries(4, 31..=33);
    c.append(&mut store, &next).await;
    c.holds_log(&mut store, "after appending after the second reset", id(4, 30), &next).await;
    c.eq("hard state", c.state(&mut store).await.hard_state, hs);
}

/// `reset_to` a position at or below `prev.index`, in any term, changes nothing.
pub async fn reset_to_at_or_below_prev_is_a_noop<S: LogStore>(mut store: S) {
    let c = Check("reset_to_at_or_below_prev_is_a_noop");
    c.ok("reset_to(0, 0) of an empty log", store.reset_to(id(0, 0)).await);
    c.holds_log(&mut store, "after reset_to(0, 0)", id(0, 0), &[]).await;
    let all = sample_entries(2, 1..=10);
    c.append(&mut store, &all).await;
    c.ok("purge(5)", store.purge(5).await);
    for at in [id(2, 5), id(1, 5), id(3, 5), id(2, 3), id(9, 1), id(0, 0)] {
        c.ok(&format!("reset_to({at:?})"), store.reset_to(at).await);
        c.holds_log(&mut store, &format!("after reset_to({at:?}) with prev at (2, 5)"), id(2, 5), &all[5..]).await;
    }
}

/// A snapshot whose stored data `corrupt` damaged (by flipping at least one bit of the
/// data of the snapshot it is given) is never handed out as valid: `latest` and `open`
/// either report an error, or the reader fails with [`io::ErrorKind::InvalidData`] by the
/// end of the data. Not part of [`run_snapshot_conformance`]: only a store's own tests
/// know how to damage what it stores.
pub async fn corrupted_snapshot_fails_its_reader<S, C>(store: S, corrupt: C)
where
    S: LogStore,
    C: FnOnce(&S, &SnapshotMeta),
{
    let c = Check("corrupted_snapshot_fails_its_reader");
    let snaps = store.snapshots();
    let w = c.save(&*snaps, id(2, 9), 9, 100_000);
    drop(snaps);
    corrupt(&store, &w.meta);
    let snaps = store.snapshots();
    let meta = match snaps.latest() {
        Err(_) => return,
        Ok(None) => c.fail(format_args!("latest after the corruption: the snapshot is gone")),
        Ok(Some(meta)) => meta,
    };
    c.eq("latest after the corruption", &meta, &w.meta);
    let mut r = match snaps.open(meta.last) {
        Err(_) => return,
        Ok(r) => r,
    };
    let mut got = Vec::new();
    match r.read_to_end(&mut got) {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
        Err(e) => c.fail(format_args!("reading the corrupted snapshot: expected InvalidData, got {e}")),
        Ok(n) => c.fail(format_args!(
            "reading the corrupted snapshot: {n} bytes read without an error ({})",
            if got == w.data { "the corruption did not change the data" } else { "wrong data" }
        )),
    }
}

/// A finished snapshot is durable: after a reopen it is the latest, with the same
/// metadata, and reads back exactly; so is a newer one finished after the reopen.
pub async fn finished_snapshot_survives_reopen<S, R, RFut>(store: S, mut reopen: R)
where
    S: LogStore,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    let c = Check("finished_snapshot_survives_reopen");
    let snaps = store.snapshots();
    let first = c.save(&*snaps, id(2, 6), 3, 1_200_000);
    drop(snaps);
    let store = reopen(store).await;
    let snaps = store.snapshots();
    c.is_latest(&*snaps, "after a reopen", &first);
    let second = c.save(&*snaps, id(3, 11), 11, 5000);
    drop(snaps);
    let store = reopen(store).await;
    let snaps = store.snapshots();
    c.is_latest(&*snaps, "after a newer snapshot and a reopen", &second);
    let empty = c.save(&*snaps, id(3, 12), 12, 0);
    drop(snaps);
    let store = reopen(store).await;
    c.is_latest(&*store.snapshots(), "after an empty snapshot and a reopen", &empty);
}

/// A writer dropped without `finish` leaves nothing that a reopen would take for a
/// snapshot: after the reopen, the previous snapshot (or none) is the latest, and the
/// dropped one cannot be opened.
pub async fn dropped_writer_leaves_the_previous_snapshot_after_reopen<S, R, RFut>(store: S, mut reopen: R)
where
    S: LogStore,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    let c = Check("dropped_writer_leaves_the_previous_snapshot_after_reopen");
    let snaps = store.snapshots();
    drop(c.start(&*snaps, id(1, 3), &sample_membership(0), 3, &sample_snapshot_data(1, 1_100_000)));
    drop(snaps);
    let store = reopen(store).await;
    let snaps = store.snapshots();
    c.eq("latest after dropping the only writer and reopening", c.latest(&*snaps), None);
    c.is_err("open of the dropped snapshot after a reopen", snaps.open(id(1, 3)).map(|_| ()));

    let first = c.save(&*snaps, id(1, 3), 3, 2500);
    for (last, len) in [(id(2, 8), 1_100_000), (id(2, 8), 0), (id(1, 3), 10)] {
        drop(c.start(&*snaps, last, &sample_membership(1), 1, &sample_snapshot_data(2, len)));
    }
    drop(snaps);
    let store = reopen(store).await;
    let snaps: Arc<dyn SnapshotStore> = store.snapshots();
    c.is_latest(&*snaps, "after dropping writers and reopening", &first);
    c.is_err("open of a dropped newer snapshot after a reopen", snaps.open(id(2, 8)).map(|_| ()));
    let next = c.save(&*snaps, id(2, 8), 8, 100);
    drop(snaps);
    let store = reopen(store).await;
    c.is_latest(&*store.snapshots(), "after finishing at the dropped position and reopening", &next);
}

/// Installing a snapshot (finish it, then `reset_to` its last entry) survives a reopen:
/// the snapshot is the latest; a reset that emptied the log is durable (`prev` and
/// `last` at the snapshot, appends after it kept); a reset to a held entry keeps every
/// entry after it and leaves `prev` at the snapshot or, since its removal of the prefix
/// may come back as a purge's may, at an earlier position with those entries intact.
pub async fn reset_to_survives_reopen<S, R, RFut>(mut store: S, mut reopen: R)
where
    S: LogStore,
    R: FnMut(S) -> RFut,
    RFut: Future<Output = S>,
{
    let c = Check("reset_to_survives_reopen");
    let all: Vec<Entry> = sample_entries(1, 1..=3).into_iter().chain(sample_entries(2, 4..=10)).collect();
    c.append(&mut store, &all).await;
    let hs = HardState { term: 2, voted_for: Some(3) };
    c.ok("save_hard_state", store.save_hard_state(&hs).await);

    // A snapshot at an entry the log holds: the entries after it stay.
    let at = id(2, 6);
    let first = c.save(&*store.snapshots(), at, 4, 3000);
    c.ok("reset_to(2, 6)", store.reset_to(at).await);
    let mut store = reopen(store).await;
    let state = c.state(&mut store).await;
    let earlier = |p: LogId| p.index < at.index && (p == id(0, 0) || all.iter().any(|e| id(e.term, e.index) == p));
    c.holds(
        &format!("after reset_to(2, 6) and a reopen: prev {:?} is neither (2, 6) nor an earlier position", state.prev),
        state.prev == at || earlier(state.prev),
    );
    c.holds_log(&mut store, "after reset_to(2, 6) and a reopen", state.prev, &all[state.prev.index as usize..]).await;
    c.is_latest(&*store.snapshots(), "after reset_to(2, 6) and a reopen", &first);
    c.eq("hard state after a reopen", c.state(&mut store).await.hard_state, hs);

    // A snapshot at an entry the log holds in another term: the log is emptied.
    let at = id(3, 8);
    let second = c.save(&*store.snapshots(), at, 8, 4000);
    c.ok("reset_to(3, 8)", store.reset_to(at).await);
    let mut store = reopen(store).await;
    c.holds_log(&mut store, "after reset_to(3, 8) and a reopen", at, &[]).await;
    c.is_latest(&*store.snapshots(), "after reset_to(3, 8) and a reopen", &second);
    let next = sample_entries(3, 9..=11);
    c.append(&mut store, &next).await;
    let mut store = reopen(store).await;
    c.holds_log(&mut store, "after appending after the reset and a reopen", at, &next).await;

    // A snapshot beyond the last entry: the log is emptied.
    let at = id(5, 40);
    let third = c.save(&*store.snapshots(), at, 39, 0);
    c.ok("reset_to(5, 40)", store.reset_to(at).await);
    let mut store = reopen(store).await;
    c.holds_log(&mut store, "after reset_to(5, 40) and a reopen", at, &[]).await;
    c.is_latest(&*store.snapshots(), "after reset_to(5, 40) and a reopen", &third);
    c.eq("hard state after the last reopen", c.state(&mut store).await.hard_state, hs);
    let next = sample_entries(5, 41..=41);
    c.append(&mut store, &next).await;
    c.holds_log(&mut store, "after appending after the last reset", at, &next).await;
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use futures::executor::block_on;

    use super::*;
    use crate::testing::mem_store::MemStore;

    #[test]
    fn mem_store_passes_the_snapshot_suite() {
        block_on(run_snapshot_conformance(|| async { MemStore::new() }));
    }

    #[test]
    fn mem_store_passes_the_snapshot_suite_with_a_write_delay() {
        block_on(run_snapshot_conformance(|| async {
            let store = MemStore::new();
            store.set_write_delay(Some(Arc::new(|| Box::pin(futures::future::ready(())))));
            store
        }));
    }

    #[test]
    fn mem_store_passes_the_snapshot_reopen_suite() {
        block_on(run_snapshot_reopen_conformance(
            || async { MemStore::new() },
            |store: MemStore| async move { store.clone() },
        ));
    }

    #[test]
    fn mem_store_passes_the_snapshot_reopen_suite_across_crashes() {
        for seed in 0..10 {
            let mut rng = fastrand::Rng::with_seed(seed);
            block_on(run_snapshot_reopen_conformance(
                || async { MemStore::new() },
                move |store: MemStore| {
                    store.crash(&mut rng);
                    async move { store.clone() }
                },
            ));
        }
    }

    #[test]
    fn mem_store_detects_a_corrupted_snapshot() {
        for offset in [0, 1, 50_000, 99_999] {
            block_on(corrupted_snapshot_fails_its_reader(MemStore::new(), |store: &MemStore, _: &SnapshotMeta| {
                assert!(store.corrupt_snapshot(offset), "no snapshot to corrupt");
            }));
        }
    }

    /// A broken store: its snapshot store never reports a latest snapshot.
    struct Forgetful(MemStore);

    struct ForgetfulSnapshots(Arc<dyn SnapshotStore>);

    impl SnapshotStore for ForgetfulSnapshots {
        fn create(
            &self,
            last: LogId,
            membership: &Membership,
            membership_index: LogIndex,
        ) -> Result<Box<dyn SnapshotWriter>, StoreError> {
            self.0.create(last, membership, membership_index)
        }
        fn latest(&self) -> Result<Option<SnapshotMeta>, StoreError> {
            Ok(None)
        }
        fn open(&self, last: LogId) -> Result<Box<dyn Read + Send>, StoreError> {
            self.0.open(last)
        }
        fn read_chunk(&self, last: LogId, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
            self.0.read_chunk(last, offset, len)
        }
    }

    #[async_trait]
    impl LogStore for Forgetful {
        async fn initial_state(&mut self) -> Result<InitialState, StoreError> {
            self.0.initial_state().await
        }
        async fn save_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
            self.0.save_hard_state(hs).await
        }
        async fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
            self.0.append(entries).await
        }
        async fn truncate(&mut self, from: LogIndex) -> Result<(), StoreError> {
            self.0.truncate(from).await
        }
        async fn purge(&mut self, upto: LogIndex) -> Result<(), StoreError> {
            self.0.purge(upto).await
        }
        async fn entries(&mut self, start: LogIndex, end: LogIndex) -> Result<Vec<Entry>, StoreError> {
            self.0.entries(start, end).await
        }
        fn snapshots(&self) -> Arc<dyn SnapshotStore> {
            Arc::new(ForgetfulSnapshots(self.0.snapshots()))
        }
        async fn reset_to(&mut self, snapshot: LogId) -> Result<(), StoreError> {
            self.0.reset_to(snapshot).await
        }
    }

    #[test]
    fn a_broken_snapshot_store_fails_the_named_check() {
        let result = std::panic::catch_unwind(|| {
            block_on(finished_snapshot_is_latest_with_its_meta(Forgetful(MemStore::new())));
        });
        let payload = match result {
            Ok(()) => panic!("the broken store passed"),
            Err(payload) => payload,
        };
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            msg.starts_with("SnapshotStore conformance check `finished_snapshot_is_latest_with_its_meta` failed"),
            "unexpected panic message: {msg}"
        );
    }
}
