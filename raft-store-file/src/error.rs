//! Errors of the file store.

use std::path::PathBuf;

use raft::StoreError;

/// An error opening or using a [`FileStore`](crate::FileStore).
///
/// The [`raft::LogStore`] methods return [`StoreError`]; every variant here converts into
/// one, keeping the file name and offset in the message.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    /// An I/O call on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Data read back is corrupt where it cannot be a torn tail (a record followed by
    /// valid ones, an earlier segment, the hard state file, the purge marker, a segment
    /// header, a snapshot), or a read returned bytes that fail their checksum (a bit flip,
    /// a misdirected read). At run time it also stops the store (fail-stop).
    #[error("corrupt data in {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The corrupt file.
        path: PathBuf,
        /// Byte offset of the first bad byte found (or of the bad record's frame).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or another open `FileStore` in this process) holds the directory.
    #[error("data directory {path} is locked by another open store")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A file belongs to another cluster.
    #[error("{path} belongs to cluster {found}, this store was opened for cluster {expected}")]
    ClusterMismatch {
        /// The file.
        path: PathBuf,
        /// The cluster id the store was opened with.
        expected: u64,
        /// The cluster id found in the file.
        found: u64,
    },
    /// The options are unusable.
    #[error("invalid file store options: {0}")]
    Options(String),
    /// A call broke its method's contract (for example a snapshot older than the one
    /// held); nothing was written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An earlier write or sync failed, or an earlier read returned corrupt data, so the
    /// store refuses every write (fail-stop).
    #[error("the store refuses writes after an earlier failure: {0}")]
    Failed(String),
}

impl FileStoreError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FileStoreError::Io { path: path.into(), source }
    }

    /// A corruption error.
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        FileStoreError::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}

impl From<FileStoreError> for StoreError {
    fn from(e: FileStoreError) -> Self {
        match e {
            FileStoreError::Io { path, source } => {
                StoreError::Io(std::io::Error::new(source.kind(), format!("{}: {source}", path.display())))
            }
            other @ (FileStoreError::Corrupt { .. } | FileStoreError::ClusterMismatch { .. }) => {
                StoreError::Corrupt(other.to_string())
            }
            other @ (FileStoreError::Locked { .. } | FileStoreError::Options(_)) => {
                StoreError::Invalid(other.to_string())
            }
            FileStoreError::Invalid(why) => StoreError::Invalid(why),
            FileStoreError::Failed(why) => StoreError::Failed(why),
        }
    }
}
