//! Errors of tonno-core. Each names the file (when there is one) and the cause.

use std::path::PathBuf;

/// Result alias for tonno-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tonno-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid image of its format (corrupt, truncated,
    /// inconsistent header, unsupported feature).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// The NIfTI library rejected the file.
    #[error("{}: not a readable NIfTI-1 file", path.display())]
    Nifti {
        path: PathBuf,
        #[source]
        source: nifti::NiftiError,
    },
    /// The image holds NaN or infinite voxels.
    #[error(
        "{}: {count} voxel(s) are NaN or infinite (first at voxel {first:?}, channel {channel}); \
         clean the image or replace them before running tonno",
        path.display()
    )]
    NonFinite {
        path: PathBuf,
        count: usize,
        first: [usize; 3],
        channel: usize,
    },
    /// The file name's extension is not a format tonno reads or writes.
    #[error("{}: unknown image format (expected .nii, .nii.gz, .nrrd, .nhdr, .dcm or a folder holding a DICOM series)", path.display())]
    UnknownFormat { path: PathBuf },
    /// An output exists and overwriting was not asked for.
    #[error("{} already exists; refusing to overwrite it (pass --force to replace it)", path.display())]
    Exists { path: PathBuf },
    /// A dataset folder or label file is unusable.
    #[error("{}: {reason}", path.display())]
    Dataset { path: PathBuf, reason: String },
    /// Two arrays or volumes that must agree do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// A parameter is out of its valid range.
    #[error("invalid {name}: {reason}")]
    Invalid { name: String, reason: String },
}

impl Error {
    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.into(),
            reason: reason.into(),
        }
    }
}
