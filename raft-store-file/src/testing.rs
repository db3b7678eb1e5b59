//! Test support (feature `testing`): [`FaultFs`], an in-memory [`Vfs`] that models what a
//! crash keeps of unsynced data, can fail or crash at a chosen operation, and can corrupt
//! what reads return (bit flips, misdirected reads) or what is stored (latent corruption).
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
/// # Read faults
///
/// A disk can also return wrong bytes without an error. [`FaultFs::flip_bits_on_read`]
/// arms the next `read` or `read_at` (of one file, or of any) to return its bytes with
/// some bits flipped, at positions drawn from a seed; [`FaultFs::misdirect_next_read`]
/// arms it to return the bytes of another place ([`Misdirect`]: another offset of the
/// same file, or the same offset of another file; zeros where that place holds nothing).
/// Both fire once, on a read that returns at least one byte, and leave the stored data
/// as it is: reading again returns the right bytes. [`FaultFs::corrupt_at_rest`] flips
/// stored bits instead (latent corruption), so every later read sees them, across
/// crashes too. [`FaultFs::read_faults_fired`] counts the armed read faults that fired.
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
    /// Armed read faults, fired in order by the reads they apply to.
    read_faults: Vec<ReadFault>,
    read_faults_fired: u64,
}

/// Where a misdirected read takes its bytes from (see [`FaultFs::misdirect_next_read`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misdirect {
    /// The same file, this many bytes after (or, negative, before) the offset asked for:
    /// a block written or read at the wrong address, typically 4096 away.
    Shift(i64),
    /// The same offset of another file (a block of another file's extent).
    OtherFile(PathBuf),
}

/// A fault armed for a later read.
struct ReadFault {
    /// The file whose read it applies to; `None`: any file.
    path: Option<PathBuf>,
    kind: ReadFaultKind,
}

enum ReadFaultKind {
    /// Flip this many bits, at positions drawn from the generator.
    Flip(u32, fastrand::Rng),
    Misdirect(Misdirect),
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

impl State {
    /// Applies the first armed read fault for `path`, if any, to `buf`: the bytes a read
    /// of `path` at `offset` returned. A fault fires only on a read of at least one byte.
    fn corrupt_read(&mut self, path: &Path, offset: u64, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        let Some(i) = self.read_faults.iter().position(|f| f.path.as_deref().is_none_or(|p| p == path)) else {
            return;
        };
        let fault = self.read_faults.remove(i);
        self.read_faults_fired += 1;
        match fault.kind {
            ReadFaultKind::Flip(bits, mut rng) => {
                for _ in 0..bits.max(1) {
                    let bit = rng.usize(..buf.len() * 8);
                    if let Some(b) = buf.get_mut(bit / 8) {
                        *b ^= 1 << (bit % 8);
                    }
                }
            }
            ReadFaultKind::Misdirect(to) => {
                let (source, from) = match &to {
                    Misdirect::Shift(d) => (path.to_path_buf(), offset.saturating_add_signed(*d)),
                    Misdirect::OtherFile(other) => (other.clone(), offset),
                };
                let content = self.content(&source).map(Vec::as_slice).unwrap_or_default();
                for (k, b) in buf.iter_mut().enumerate() {
                    let at = usize::try_from(from).ok().and_then(|f| f.checked_add(k));
                    *b = at.and_then(|at| content.get(at)).copied().unwrap_or(0);
                }
            }
        }
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

    /// Disarms the faults armed and not yet fired (read faults too).
    pub fn disarm(&self) {
        let mut s = self.lock();
        s.crash_countdown = None;
        s.fail_countdown = None;
        s.fail_sync = false;
        s.read_faults.clear();
    }

    /// Arms a bit flip: the next `read` or `read_at` of `path` (`None`: of any file)
    /// that returns at least one byte returns its bytes with `bits` bits flipped (at
    /// least one; the same bit may be drawn twice and flip back), at positions drawn
    /// from `seed`. The stored data is unchanged.
    pub fn flip_bits_on_read(&self, path: Option<&Path>, bits: u32, seed: u64) {
        let kind = ReadFaultKind::Flip(bits, fastrand::Rng::with_seed(seed));
        self.lock().read_faults.push(ReadFault { path: path.map(Path::to_path_buf), kind });
    }

    /// Arms a misdirected read: the next `read` or `read_at` of `path` (`None`: of any
    /// file) that returns at least one byte returns as many bytes from the place `to`
    /// names instead (zeros where that place holds nothing). The stored data is
    /// unchanged.
    pub fn misdirect_next_read(&self, path: Option<&Path>, to: Misdirect) {
        let kind = ReadFaultKind::Misdirect(to);
        self.lock().read_faults.push(ReadFault { path: path.map(Path::to_path_buf), kind });
    }

    /// Latent corruption: flips the bits of `mask` in the byte at `offset` of the stored
    /// file `path`, in its durable content and in what reads return, so every later read
    /// sees it, after a crash too. Meant for synced data (a write still pending over the
    /// byte may bring the right value back on a crash). An error if the file does not
    /// exist or is not that long.
    pub fn corrupt_at_rest(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let mut s = self.lock();
        let ino = s.lookup(path)?;
        let inode = s.inode_mut(ino)?;
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(b) = inode.current.get_mut(at) else {
            return Err(err(io::ErrorKind::InvalidInput, format!("{} has no byte {offset}", path.display())));
        };
        *b ^= mask;
        if let Some(b) = inode.durable.get_mut(at) {
            *b ^= mask;
        }
        Ok(())
    }

    /// The number of armed read faults (flips and misdirected reads) that fired.
    pub fn read_faults_fired(&self) -> u64 {
        self.lock().read_faults_fired
    }

    /// Whether a read fault is armed and has not fired yet.
    pub fn read_fault_armed(&self) -> bool {
        !self.lock().read_faults.is_empty()
    }

    /// The length of `path` as reads see it (for tests that pick an offset to corrupt).
    pub fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.lock().content(path)?.len() as u64)
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
    /// released, handles opened before are dead, armed faults (read faults too) are
    /// disarmed, latent corruption stays, and the process is up again.
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
        s.read_faults.clear();
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
        let mut s = self.lock();
        s.check_up()?;
        let mut data = s.content(path)?.clone();
        s.corrupt_read(path, 0, &mut data);
        Ok(data)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.lock();
        s.check_up()?;
        let content = s.content(path)?;
        let from = (offset as usize).min(content.len());
        let n = buf.len().min(content.len() - from);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), content.get(from..from + n)) {
            dst.copy_from_slice(src);
        }
        if let Some(got) = buf.get_mut(..n) {
            s.corrupt_read(path, offset, got);
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

    fn with_file(name: &str, data: &[u8]) -> FaultFs {
        let fs = setup();
        let mut f = fs.create(&p(name), true).expect("create");
        f.write_at(0, data).expect("write");
        f.sync_data().expect("sync");
        fs.sync_dir(Path::new("/d")).expect("sync dir");
        fs
    }

    #[test]
    fn a_bit_flip_on_read_fires_once_on_the_file_it_names_and_is_deterministic() {
        let data: Vec<u8> = (0..=255).collect();
        let flipped = |seed| {
            let fs = with_file("a", &data);
            let mut other = fs.create(&p("b"), true).expect("create");
            other.write_at(0, b"other").expect("write");
            fs.flip_bits_on_read(Some(&p("a")), 3, seed);
            assert_eq!(fs.read(&p("b")).expect("read b"), b"other", "another file's read is untouched");
            let mut buf = [0u8; 0];
            assert_eq!(fs.read_at(&p("a"), 0, &mut buf).expect("empty read"), 0);
            assert!(fs.read_fault_armed(), "a read of no bytes does not fire it");
            let got = fs.read(&p("a")).expect("read");
            assert_eq!(fs.read_faults_fired(), 1);
            assert_eq!(fs.read(&p("a")).expect("read again"), data, "it fires once; the stored data is unchanged");
            got
        };
        let got = flipped(7);
        let diff: u32 = got.iter().zip(&data).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert!((1..=3).contains(&diff) && diff % 2 == 1, "{diff} bits differ");
        assert_eq!(flipped(7), got, "the same seed flips the same bits");
        assert_ne!(flipped(8), got);
    }

    #[test]
    fn a_misdirected_read_returns_another_place_and_zeros_past_its_end() {
        let data: Vec<u8> = (0..6000u32).map(|i| (i % 251) as u8).collect();
        let fs = with_file("a", &data);
        let mut b = fs.create(&p("b"), true).expect("create");
        b.write_at(0, b"0123456789").expect("write");
        let mut buf = [0u8; 8];
        fs.misdirect_next_read(None, Misdirect::Shift(4096));
        assert_eq!(fs.read_at(&p("a"), 100, &mut buf).expect("read"), 8);
        assert_eq!(buf[..], data[4196..4204]);
        fs.misdirect_next_read(Some(&p("a")), Misdirect::Shift(-4096));
        fs.read_at(&p("a"), 4100, &mut buf).expect("read");
        assert_eq!(buf[..], data[4..12]);
        fs.misdirect_next_read(Some(&p("a")), Misdirect::OtherFile(p("b")));
        fs.read_at(&p("a"), 6, &mut buf).expect("read");
        assert_eq!(&buf, b"6789\0\0\0\0", "the other file's bytes, then zeros past its end");
        fs.read_at(&p("a"), 100, &mut buf).expect("read");
        assert_eq!(buf[..], data[100..108], "each fires once");
        assert_eq!(fs.read_faults_fired(), 3);
    }

    #[test]
    fn corruption_at_rest_is_seen_by_every_read_and_survives_a_crash() {
        let fs = with_file("a", b"durable bytes");
        assert!(fs.corrupt_at_rest(&p("a"), 99, 1).is_err(), "past the end");
        fs.corrupt_at_rest(&p("a"), 0, 0x20).expect("corrupt");
        assert_eq!(fs.read(&p("a")).expect("read"), b"Durable bytes");
        fs.crash(&mut fastrand::Rng::with_seed(1));
        assert_eq!(fs.read(&p("a")).expect("read"), b"Durable bytes");
        assert_eq!(fs.read_faults_fired(), 0);
    }

    #[test]
    fn a_crash_disarms_read_faults_not_yet_fired() {
        let fs = with_file("a", b"bytes");
        fs.flip_bits_on_read(None, 1, 1);
        fs.crash(&mut fastrand::Rng::with_seed(1));
        assert!(!fs.read_fault_armed());
        assert_eq!(fs.read(&p("a")).expect("read"), b"bytes");
    }
}
