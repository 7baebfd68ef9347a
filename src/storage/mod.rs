//! Storage: the database file (meta pages, the copy-on-write directory
//! B+tree, payload extents, the free list) and its errors. Knows nothing
//! about RESP or commands.

pub mod alloc;
pub mod btree;
pub mod io;
pub mod log;
pub mod page;
pub mod pagefile;
pub mod wal;

/// Errors of the storage layer, with what was being done.
#[derive(Debug)]
pub enum StorageError {
    /// An I/O call failed; the text says what it was doing.
    Io(String, std::io::Error),
    /// A page, entry or payload failed its checks.
    Corrupt(String),
    /// The file is not a database of ours; the text says what it looks like.
    NotOurs(String),
    /// A format version newer than this build understands.
    TooNew(u32),
}

impl StorageError {
    pub fn corrupt(what: impl Into<String>) -> Self {
        StorageError::Corrupt(what.into())
    }
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        StorageError::Io(what.into(), err)
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Io(what, e) => write!(f, "{what}: {e}"),
            StorageError::Corrupt(what) => write!(f, "corrupt database: {what}"),
            StorageError::NotOurs(what) => f.write_str(what),
            StorageError::TooNew(v) => write!(
                f,
                "the database was written by a newer bitmapist-server (format version {v}, this build reads up to {})",
                page::FORMAT_VERSION
            ),
        }
    }
}

impl std::error::Error for StorageError {}
