//! The one error type of the library.
//!
//! Each variant says what failed in terms an operator can act on. A failed MAC is always one
//! opaque [`Error::Corrupt`] (we never say *which* check failed beyond the object's name);
//! a format from a newer version is [`Error::NewerFormat`], so "upgrade cairn" is never
//! mistaken for "your repository is damaged".

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file or directory.
    #[error("{path}: {source}")]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or the repository's filesystem) is full.
    #[error("no space left on device while writing {path}")]
    NoSpace {
        /// What was being written.
        path: PathBuf,
    },
    /// There is no repository at the given location.
    #[error("no cairn repository at {0} (run `cairn init` first)")]
    NoRepository(PathBuf),
    /// A repository exists already where `init` was asked to make one.
    #[error("{0} already exists and is not empty; refusing to initialise a repository there")]
    AlreadyExists(PathBuf),
    /// No key file could be opened with the password.
    #[error("wrong password: no key in the repository opens with it")]
    WrongPassword,
    /// The repository or one of its parts is held by another process.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// An object failed authentication, or its structure does not decode.
    #[error("{what} is damaged: {why}")]
    Corrupt {
        /// The damaged object: a pack, a blob of a pack, a snapshot file...
        what: String,
        /// What was found wrong.
        why: String,
    },
    /// An object was written by a newer cairn than this one.
    #[error(
        "{what} uses format version {found}, newer than this cairn understands ({supported}); upgrade cairn"
    )]
    NewerFormat {
        /// The object.
        what: String,
        /// The version in the object.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A snapshot, path or key that was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    /// A snapshot holds an entry that restore refuses to write (a hostile or broken repository).
    #[error("refusing to restore {path:?}: {why}")]
    Hostile {
        /// The entry's path inside the snapshot.
        path: String,
        /// Why it was refused.
        why: String,
    },
    /// A command whose output was being stored failed.
    #[error("command `{command}` failed: {why}; no snapshot was written")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status or the error starting it.
        why: String,
    },
    /// The RocksDB index reported an error.
    #[error("index: {0}")]
    Index(String),
}

impl Error {
    /// An I/O error on `path`, with a full disk recognised as such.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            Error::NoSpace { path }
        } else {
            Error::Io { path, source }
        }
    }

    /// A damaged object.
    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            why: why.into(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
