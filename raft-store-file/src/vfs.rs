//! The file and directory operations the store performs, behind a small trait so that
//! tests can run the same store code over a simulated file system that loses unsynced
//! data on a crash (`testing::FaultFs`, feature `testing`).
//!
//! [`StdFs`] is the real implementation on `std::fs`, used by
//! [`FileStore::open`](crate::FileStore::open). The store is generic over the [`Vfs`], so
//! the real path is monomorphized and costs nothing over calling `std::fs` directly.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
#[cfg(not(unix))]
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The directory and file operations of a [`FileStore`](crate::FileStore).
///
/// # Durability contract
///
/// The store relies on exactly these promises, which [`StdFs`] inherits from POSIX:
///
/// - Data written to a file is durable once [`VfsFile::sync_data`] or
///   [`VfsFile::sync_all`] of that file returned `Ok`; before that a crash may keep any
///   prefix of the writes made since the last sync (the last one torn anywhere).
/// - Creating, renaming and removing a file is durable once [`Vfs::sync_dir`] of its
///   directory returned `Ok`; before that a crash may keep any prefix of those operations,
///   in the order they were made.
/// - A failed sync leaves the state unknown; the store never retries it (fail-stop).
pub trait Vfs: Clone + Debug + Send + Sync + 'static {
    /// An open file handle for writing.
    type File: VfsFile;
    /// A held directory lock; dropping it releases the lock.
    type Lock: Debug + Send + Sync + 'static;

    /// Creates `dir` and its parents if they do not exist.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates `path` if needed and takes an exclusive lock on it; `None` if another
    /// holder has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Self::Lock>>;
    /// The names of the entries of `dir` (names that are not UTF-8 are left out).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Reads the whole file (an error of kind `NotFound` if it does not exist).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads from `offset` until `buf` is full or the file ends; returns the bytes read.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Creates a file for writing: it must not exist if `exclusive`, else an existing
    /// file is emptied.
    fn create(&self, path: &Path, exclusive: bool) -> io::Result<Self::File>;
    /// Opens an existing file for writing.
    fn open_write(&self, path: &Path) -> io::Result<Self::File>;
    /// Renames `from` to `to` (same directory), replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the creates, renames and removes in `dir` durable (`fsync` of the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file opened for writing through a [`Vfs`].
pub trait VfsFile: Debug + Send + Sync + 'static {
    /// Writes all of `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Sets the file's length (cuts it, or extends it with zeros).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&mut self) -> io::Result<()>;
}

/// The real file system, through `std::fs`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl Vfs for StdFs {
    type File = File;
    type Lock = File;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir)? {
            if let Ok(name) = item?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let f = File::open(path)?;
        let mut got = 0;
        while let Some(rest) = buf.get_mut(got..).filter(|rest| !rest.is_empty()) {
            match read_once(&f, offset + got as u64, rest) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn create(&self, path: &Path, exclusive: bool) -> io::Result<File> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if exclusive {
            o.create_new(true);
        } else {
            o.create(true).truncate(true);
        }
        o.open(path)
    }

    fn open_write(&self, path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).open(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// One positioned read (`pread` where the platform has it).
fn read_once(f: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_at(f, buf, offset)
    }
    #[cfg(not(unix))]
    {
        let mut f = f;
        f.seek(SeekFrom::Start(offset))?;
        f.read(buf)
    }
}

impl VfsFile for File {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        // One positioned write (`pwrite`) where the platform has it.
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(self, data, offset)
        }
        #[cfg(not(unix))]
        {
            self.seek(SeekFrom::Start(offset))?;
            self.write_all(data)
        }
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&mut self) -> io::Result<()> {
        File::sync_all(self)
    }
}
