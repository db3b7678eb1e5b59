//! The file system helpers every stage uses: errors that name their path, atomic
//! replacement of a small file, directory syncs, removal, and reading a small
//! checksummed file.

use std::io;
use std::path::Path;

use crate::format;
use crate::vfs::{Vfs, VfsFile};
use crate::FileStoreError;

/// Attaches the path an I/O call was about to its error.
pub(crate) trait IoContext<T> {
    /// The result, its error wrapped as [`FileStoreError::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T, FileStoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, FileStoreError> {
        self.map_err(|e| FileStoreError::io(path, e))
    }
}

/// Makes the creates, renames and removes in `dir` durable.
pub(crate) fn sync_dir<F: Vfs>(fs: &F, dir: &Path) -> Result<(), FileStoreError> {
    fs.sync_dir(dir).at(dir)
}

/// Removes a file (durable only after [`sync_dir`]).
pub(crate) fn remove<F: Vfs>(fs: &F, path: &Path) -> Result<(), FileStoreError> {
    fs.remove(path).at(path)
}

/// Reads a whole file.
pub(crate) fn read<F: Vfs>(fs: &F, path: &Path) -> Result<Vec<u8>, FileStoreError> {
    fs.read(path).at(path)
}

/// Writes `parts` (concatenated) to `dir/name` atomically: temp file, fsync, rename,
/// directory fsync.
pub(crate) fn write_atomic<F: Vfs>(fs: &F, dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), FileStoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = fs.create(&tmp, false).at(&tmp)?;
    let mut at = 0u64;
    for part in parts {
        f.write_at(at, part).at(&tmp)?;
        at += part.len() as u64;
    }
    f.sync_all().at(&tmp)?;
    drop(f);
    fs.rename(&tmp, &dst).at(&dst)?;
    sync_dir(fs, dir)
}

/// Reads a small checksummed file; `None` if it does not exist.
pub(crate) fn read_small<F: Vfs>(
    fs: &F,
    path: &Path,
    magic: [u8; 8],
    body_len: usize,
    cluster_id: u64,
) -> Result<Option<Vec<u8>>, FileStoreError> {
    let bytes = match fs.read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileStoreError::io(path, e)),
    };
    let (cid, body) = format::decode_small_file(magic, &bytes, body_len)
        .map_err(|(offset, reason)| FileStoreError::corrupt(path, offset, reason))?;
    if cid != cluster_id {
        return Err(FileStoreError::ClusterMismatch { path: path.into(), expected: cluster_id, found: cid });
    }
    Ok(Some(body.to_vec()))
}
