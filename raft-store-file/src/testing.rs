//! Test support (feature `testing`): [`FaultFs`], an in-memory [`Vfs`] that models what a
//! crash keeps of unsynced data, and can fail or crash at a chosen operation.
//!
//! ```
//! use raft_store_file::testing::FaultFs;
//! use raft_store_file::{FileStore, FileStoreOptions};
//!
//! let fs = FaultFs::new();
//! let store = FileStore::open_with(fs.clone(), "/data", FileStoreOptions::default())?;
//! drop(store);
//! fs.crash(&mut fastrand::Rng::with_seed(1)); // only what was synced survives, torn
//! let store = FileStore::open_with(fs.clone(), "/data", FileStoreOptions::default())?;
//! # Ok::<(), raft_store_file::FileStoreError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::vfs::{Vfs, VfsFile};

/// Writes torn on a crash keep whole sectors of this size when their unwritten part reads
/// back as zeros (the file's size was updated, its data blocks were not).
const SECTOR: u64 = 512;

/// A simulated file system for crash tests; clones share one file system.
///
/// # What a crash keeps
///
/// Every file has a durable content (as of its last successful `sync_data` or
/// `sync_all`) and the list of writes and length changes made since. Every directory has
/// its durable entries (as of its last `sync_dir`) and the list of creates, renames and
/// removes made since. [`FaultFs::crash`] then, for every directory, keeps a random
/// prefix of its unsynced entry changes (in order), and for every file still named, keeps
/// a random prefix of its unsynced changes, the last one possibly torn at an arbitrary
/// byte (sometimes with the rest of its extent reading as zeros from a sector boundary).
/// What a crash keeps becomes durable; files no longer named are gone.
///
/// # Faults
///
/// The mutating operations (`create`, `write_at`, `set_len`, the syncs, `rename`,
/// `remove`, `sync_dir`, taking the lock) are counted. [`FaultFs::crash_after`] makes the
/// process "die" at one of them: that operation and every later one (reads too) fail
/// until [`FaultFs::crash`] is called. [`FaultFs::fail_after`] and
/// [`FaultFs::fail_next_sync`] make one operation fail with an I/O error, without effect,
/// and let later ones run, as a failing disk would.
///
/// Directories are created durably by `create_dir_all`; a rename must stay in one
/// directory.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash: handles from before it are dead.
    generation: u64,
    /// The process is down: everything fails until `crash` is called.
    down: bool,
    crash_countdown: Option<u64>,
    fail_countdown: Option<u64>,
    fail_sync: bool,
    ops: u64,
}

#[derive(Default)]
struct Dir {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    pending: Vec<DirOp>,
}

enum DirOp {
    Link(String, u64),
    Unlink(String),
    Rename(String, String),
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, u64>) {
        match self {
            DirOp::Link(name, ino) => {
                entries.insert(name.clone(), *ino);
            }
            DirOp::Unlink(name) => {
                entries.remove(name);
            }
            DirOp::Rename(from, to) => {
                if let Some(ino) = entries.remove(from) {
                    entries.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<FileOp>,
}

enum FileOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn write_into(content: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let at = offset as usize;
    if content.len() < at + data.len() {
        content.resize(at + data.len(), 0);
    }
    if let Some(dst) = content.get_mut(at..at + data.len()) {
        dst.copy_from_slice(data);
    }
}

impl FileOp {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            FileOp::Write(offset, data) => write_into(content, *offset, data),
            FileOp::SetLen(len) => content.resize(*len as usize, 0),
        }
    }

    /// Applies a torn version of the operation: a write keeps a prefix of its bytes.
    fn apply_torn(&self, content: &mut Vec<u8>, rng: &mut fastrand::Rng) {
        match self {
            FileOp::Write(offset, data) => {
                let old_len = content.len() as u64;
                let mut cut = rng.usize(..=data.len());
                let zeros = rng.u32(..4) == 0;
                if zeros {
                    // Whole sectors made it; the size covers the whole write, and what is
                    // past the old end and was not written reads as zeros.
                    let end = offset + cut as u64;
                    cut = (end - end % SECTOR).saturating_sub(*offset).min(cut as u64) as usize;
                }
                write_into(content, *offset, data.get(..cut).unwrap_or_default());
                let full = offset + data.len() as u64;
                if zeros && full > old_len && content.len() < full as usize {
                    content.resize(full as usize, 0);
                }
            }
            FileOp::SetLen(len) => {
                if rng.bool() {
                    content.resize(*len as usize, 0);
                }
            }
        }
    }
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

fn split(path: &Path) -> io::Result<(&Path, String)> {
    let parent = path.parent().ok_or_else(|| err(io::ErrorKind::InvalidInput, format!("{path:?} has no parent")))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| err(io::ErrorKind::InvalidInput, format!("{path:?} has no UTF-8 file name")))?;
    Ok((parent, name.to_string()))
}

impl State {
    /// Counts a mutating operation and fires an armed fault.
    fn tick(&mut self, what: &str, path: &Path, is_sync: bool) -> io::Result<()> {
        self.check_up()?;
        self.ops += 1;
        if let Some(n) = self.crash_countdown.as_mut() {
            if *n == 0 {
                self.crash_countdown = None;
                self.down = true;
                return Err(io::Error::other(format!("simulated crash at {what} of {}", path.display())));
            }
            *n -= 1;
        }
        if let Some(n) = self.fail_countdown.as_mut() {
            if *n == 0 {
                self.fail_countdown = None;
                return Err(io::Error::other(format!("injected failure of {what} of {}", path.display())));
            }
            *n -= 1;
        }
        if is_sync && std::mem::take(&mut self.fail_sync) {
            return Err(io::Error::other(format!("injected failure of {what} of {}", path.display())));
        }
        Ok(())
    }

    fn check_up(&self) -> io::Result<()> {
        if self.down {
            return Err(io::Error::other("simulated crash: the process is down"));
        }
        Ok(())
    }

    fn dir(&self, dir: &Path) -> io::Result<&Dir> {
        self.dirs.get(dir).ok_or_else(|| err(io::ErrorKind::NotFound, format!("no directory {}", dir.display())))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| err(io::ErrorKind::NotFound, format!("no directory {}", dir.display())))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dir(parent)?
            .current
            .get(&name)
            .copied()
            .ok_or_else(|| err(io::ErrorKind::NotFound, format!("no file {}", path.display())))
    }

    fn content(&self, path: &Path) -> io::Result<&Vec<u8>> {
        let ino = self.lookup(path)?;
        self.inodes.get(&ino).map(|i| &i.current).ok_or_else(|| io::Error::other(format!("inode {ino} is gone")))
    }

    fn inode_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| io::Error::other(format!("inode {ino} is gone")))
    }

    fn link(&mut self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        let ino = self.next_inode;
        let dir = self.dir_mut(parent)?;
        dir.current.insert(name.clone(), ino);
        dir.pending.push(DirOp::Link(name, ino));
        self.next_inode += 1;
        self.inodes.insert(ino, Inode::default());
        Ok(ino)
    }
}

impl FaultFs {
    /// An empty file system.
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Arms a crash: the mutating operation after `n` more succeed fails, and so does
    /// every later operation until [`crash`](Self::crash).
    pub fn crash_after(&self, n: u64) {
        self.lock().crash_countdown = Some(n);
    }

    /// Arms a failure: the mutating operation after `n` more succeed fails with an I/O
    /// error and has no effect; later operations work.
    pub fn fail_after(&self, n: u64) {
        self.lock().fail_countdown = Some(n);
    }

    /// Makes the next `sync_data`, `sync_all` or `sync_dir` fail, without effect.
    pub fn fail_next_sync(&self) {
        self.lock().fail_sync = true;
    }

    /// Disarms the faults armed and not yet fired.
    pub fn disarm(&self) {
        let mut s = self.lock();
        s.crash_countdown = None;
        s.fail_countdown = None;
        s.fail_sync = false;
    }

    /// Whether an armed crash fired: the process is down until [`crash`](Self::crash).
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// The number of mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Crashes the machine: every directory keeps a random prefix of its unsynced entry
    /// changes and every file a random prefix of its unsynced writes, the last one torn
    /// (see the [type documentation](FaultFs)). What is kept becomes durable, locks are
    /// released, handles opened before are dead, armed faults are disarmed and the
    /// process is up again.
    pub fn crash(&self, rng: &mut fastrand::Rng) {
        let mut s = self.lock();
        let mut live = BTreeSet::new();
        for dir in s.dirs.values_mut() {
            let keep = rng.usize(..=dir.pending.len());
            let mut entries = std::mem::take(&mut dir.durable);
            for op in dir.pending.iter().take(keep) {
                op.apply(&mut entries);
            }
            dir.pending.clear();
            dir.current = entries.clone();
            dir.durable = entries;
            live.extend(dir.current.values().copied());
        }
        s.inodes.retain(|ino, _| live.contains(ino));
        for inode in s.inodes.values_mut() {
            let keep = rng.usize(..=inode.pending.len());
            let mut content = std::mem::take(&mut inode.durable);
            for op in inode.pending.iter().take(keep) {
                op.apply(&mut content);
            }
            if let Some(op) = inode.pending.get(keep) {
                op.apply_torn(&mut content, rng);
            }
            inode.pending.clear();
            inode.current = content.clone();
            inode.durable = content;
        }
        s.locks.clear();
        s.generation += 1;
        s.down = false;
        s.crash_countdown = None;
        s.fail_countdown = None;
        s.fail_sync = false;
    }
}

impl fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("FaultFs")
            .field("files", &s.inodes.len())
            .field("ops", &s.ops)
            .field("down", &s.down)
            .finish_non_exhaustive()
    }
}

/// A file of a [`FaultFs`] opened for writing.
#[derive(Debug)]
pub struct FaultFile {
    fs: FaultFs,
    ino: u64,
    path: PathBuf,
    generation: u64,
}

impl FaultFile {
    fn with<T>(&self, what: &str, is_sync: bool, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut s = self.fs.lock();
        if s.generation != self.generation {
            return Err(io::Error::other(format!("{} was opened before a crash", self.path.display())));
        }
        s.tick(what, &self.path, is_sync)?;
        Ok(f(s.inode_mut(self.ino)?))
    }
}

impl VfsFile for FaultFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with("write", false, |i| {
            write_into(&mut i.current, offset, data);
            i.pending.push(FileOp::Write(offset, data.to_vec()));
        })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with("set_len", false, |i| {
            i.current.resize(len as usize, 0);
            i.pending.push(FileOp::SetLen(len));
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with("sync_data", true, |i| {
            i.durable = i.current.clone();
            i.pending.clear();
        })
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.with("sync_all", true, |i| {
            i.durable = i.current.clone();
            i.pending.clear();
        })
    }
}

/// The directory lock of a [`FaultFs`]; released when dropped.
#[derive(Debug)]
pub struct FaultLock {
    fs: FaultFs,
    path: PathBuf,
    generation: u64,
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut s = self.fs.lock();
        if s.generation == self.generation {
            s.locks.remove(&self.path);
        }
    }
}

impl Vfs for FaultFs {
    type File = FaultFile;
    type Lock = FaultLock;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.check_up()?;
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() {
                break;
            }
            s.dirs.entry(p.to_path_buf()).or_default();
            d = p.parent();
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<FaultLock>> {
        let mut s = self.lock();
        s.tick("lock", path, false)?;
        if s.lookup(path).is_err() {
            s.link(path)?;
        }
        if !s.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(FaultLock { fs: self.clone(), path: path.to_path_buf(), generation: s.generation }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        s.check_up()?;
        Ok(s.dir(dir)?.current.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        s.check_up()?;
        Ok(s.content(path)?.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.lock();
        s.check_up()?;
        let content = s.content(path)?;
        let from = (offset as usize).min(content.len());
        let n = buf.len().min(content.len() - from);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), content.get(from..from + n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn create(&self, path: &Path, exclusive: bool) -> io::Result<FaultFile> {
        let mut s = self.lock();
        s.tick("create", path, false)?;
        let ino = match s.lookup(path) {
            Ok(_) if exclusive => {
                return Err(err(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
            }
            Ok(ino) => {
                let inode = s.inode_mut(ino)?;
                inode.current.clear();
                inode.pending.push(FileOp::SetLen(0));
                ino
            }
            Err(_) => s.link(path)?,
        };
        Ok(FaultFile { fs: self.clone(), ino, path: path.to_path_buf(), generation: s.generation })
    }

    fn open_write(&self, path: &Path) -> io::Result<FaultFile> {
        let s = self.lock();
        s.check_up()?;
        let ino = s.lookup(path)?;
        Ok(FaultFile { fs: self.clone(), ino, path: path.to_path_buf(), generation: s.generation })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick("rename", to, false)?;
        let (dir_from, name_from) = split(from)?;
        let (dir_to, name_to) = split(to)?;
        if dir_from != dir_to {
            return Err(err(io::ErrorKind::Unsupported, "rename across directories".into()));
        }
        let dir = s.dir_mut(dir_from)?;
        let ino = dir
            .current
            .remove(&name_from)
            .ok_or_else(|| err(io::ErrorKind::NotFound, format!("no file {}", from.display())))?;
        dir.current.insert(name_to.clone(), ino);
        dir.pending.push(DirOp::Rename(name_from, name_to));
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick("remove", path, false)?;
        let (parent, name) = split(path)?;
        let dir = s.dir_mut(parent)?;
        if dir.current.remove(&name).is_none() {
            return Err(err(io::ErrorKind::NotFound, format!("no file {}", path.display())));
        }
        dir.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick("sync_dir", dir, true)?;
        let d = s.dir_mut(dir)?;
        d.durable = d.current.clone();
        d.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> PathBuf {
        Path::new("/d").join(name)
    }

    fn setup() -> FaultFs {
        let fs = FaultFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        fs
    }

    #[test]
    fn synced_data_survives_and_unsynced_data_is_a_torn_prefix() {
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let fs = setup();
            let mut f = fs.create(&p("a"), true).expect("create");
            f.write_at(0, b"durable").expect("write");
            f.sync_data().expect("sync");
            fs.sync_dir(Path::new("/d")).expect("sync dir");
            f.write_at(7, &[b'x'; 2000]).expect("write");
            fs.crash(&mut rng);
            let got = fs.read(&p("a")).expect("read");
            assert!(got.starts_with(b"durable") && got.len() <= 2007, "seed {seed}");
            assert!(got[7..].iter().all(|&b| b == b'x' || b == 0), "seed {seed}");
            // Zeros only ever follow the written bytes.
            let first_zero = got[7..].iter().position(|&b| b == 0).map_or(got.len(), |i| i + 7);
            assert!(got[first_zero..].iter().all(|&b| b == 0), "seed {seed}");
        }
    }

    #[test]
    fn unsynced_directory_changes_survive_as_a_prefix() {
        let mut seen = BTreeSet::new();
        for seed in 0..100 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let fs = setup();
            let mut f = fs.create(&p("x.tmp"), false).expect("create");
            f.write_at(0, b"new").expect("write");
            f.sync_all().expect("sync");
            fs.rename(&p("x.tmp"), &p("x")).expect("rename");
            fs.crash(&mut rng);
            let names = fs.list(Path::new("/d")).expect("list");
            assert!(names.is_empty() || names == ["x.tmp"] || names == ["x"], "seed {seed}: {names:?}");
            if names == ["x"] {
                assert_eq!(fs.read(&p("x")).expect("read"), b"new");
            }
            seen.insert(names);
        }
        assert_eq!(seen.len(), 3, "every prefix shows up");
    }

    #[test]
    fn an_armed_crash_stops_everything_until_the_crash() {
        let fs = setup();
        let mut f = fs.create(&p("a"), true).expect("create");
        fs.crash_after(1);
        f.write_at(0, b"one").expect("first write");
        assert!(f.sync_data().is_err());
        assert!(fs.is_down() && fs.read(&p("a")).is_err() && f.write_at(3, b"two").is_err());
        fs.crash(&mut fastrand::Rng::with_seed(3));
        assert!(f.write_at(0, b"stale").is_err(), "handles from before the crash are dead");
        // Neither the create nor the write was synced: the file may be gone, or hold a
        // prefix of the write.
        match fs.read(&p("a")) {
            Ok(data) => assert!(b"one".starts_with(&data) || data.iter().all(|&b| b == 0), "{data:?}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        }
    }

    #[test]
    fn an_injected_failure_has_no_effect_and_later_calls_work() {
        let fs = setup();
        let mut f = fs.create(&p("a"), true).expect("create");
        f.write_at(0, b"one").expect("write");
        fs.fail_next_sync();
        assert!(f.sync_data().is_err());
        f.sync_data().expect("a later sync works");
        fs.fail_after(0);
        assert!(fs.remove(&p("a")).is_err());
        assert_eq!(fs.read(&p("a")).expect("still there"), b"one");
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop_or_crash() {
        let fs = setup();
        let l = fs.try_lock(&p("LOCK")).expect("lock").expect("free");
        assert!(fs.try_lock(&p("LOCK")).expect("lock").is_none());
        drop(l);
        let l = fs.try_lock(&p("LOCK")).expect("lock").expect("free again");
        fs.crash(&mut fastrand::Rng::with_seed(1));
        let l2 = fs.try_lock(&p("LOCK")).expect("lock").expect("free after a crash");
        drop(l);
        assert!(fs.try_lock(&p("LOCK")).expect("lock").is_none(), "a stale lock does not release a new one");
        drop(l2);
    }
}
