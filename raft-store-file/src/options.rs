//! The options of a [`FileStore`](crate::FileStore).

use crate::FileStoreError;

/// Options of a [`FileStore`](crate::FileStore).
#[derive(Clone, Debug)]
pub struct FileStoreOptions {
    /// The cluster id written into every file and checked on open.
    pub cluster_id: u64,
    /// A segment is sealed and a new one started once it holds at least this many bytes
    /// (checked before each append; one append never spans two segments).
    pub segment_size: u64,
    /// The largest encoded entry accepted, in bytes. Larger entries are rejected with
    /// [`StoreError::Invalid`](raft::StoreError::Invalid); larger frames on disk are
    /// corruption.
    pub max_record_size: u32,
    /// Zero-filled space kept written ahead of the last record of the active segment, in
    /// bytes (0: none). An append then overwrites space the file already has, so its
    /// `fdatasync` need not commit a new file size to the file system's journal: on ext4
    /// this roughly halves the sync time of small appends. The space is extended by this
    /// much whenever an append reaches its end; recovery reads the zeros as the end of the
    /// log.
    pub preallocate: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions { cluster_id: 0, segment_size: 64 << 20, max_record_size: 64 << 20, preallocate: 1 << 20 }
    }
}

impl FileStoreOptions {
    /// Refuses options the store cannot work with.
    pub(crate) fn check(&self) -> Result<(), FileStoreError> {
        if self.segment_size == 0 {
            return Err(FileStoreError::Options("segment_size must be positive".into()));
        }
        if self.max_record_size == 0 || self.max_record_size > u32::MAX / 2 {
            return Err(FileStoreError::Options(format!("max_record_size {} is out of range", self.max_record_size)));
        }
        Ok(())
    }
}
