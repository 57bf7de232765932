//! Errors of tonno-ml. Each names the file or setting and the cause.

use std::path::PathBuf;

/// Result alias for tonno-ml.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tonno-ml.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from tonno-core (files, datasets, geometry).
    #[error(transparent)]
    Core(#[from] tonno_core::Error),
    /// The requested device is not compiled in or not present.
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    /// Weights could not be saved or loaded.
    #[error("{}: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },
    /// A run folder or its config is unusable.
    #[error("{}: {reason}", path.display())]
    Run { path: PathBuf, reason: String },
    /// File system errors on a run folder.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// File system errors on a run folder.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The training data cannot train a classifier.
    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },
    /// A parameter is out of its valid range.
    #[error("invalid {name}: {reason}")]
    Invalid { name: String, reason: String },
    /// The run was interrupted (a stop file or a signal); its last checkpoint is on disk.
    #[error("interrupted; resume with --resume")]
    Interrupted,
}

impl Error {
    pub(crate) fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
