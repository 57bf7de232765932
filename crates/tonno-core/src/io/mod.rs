//! Reading and writing medical images: NIfTI-1 (`.nii`, `.nii.gz`) and NRRD
//! (`.nrrd`, `.nhdr`) in and out, DICOM in (a folder holding a series, or an
//! Enhanced multi-frame `.dcm`), plus datasets of them.
//!
//! Every reader returns an [`Image`]: a [`Volume`] in RAS+ world millimetres
//! and what the file said about itself. Every writer writes to a temporary
//! name beside the target and renames it, so that no half-written file is
//! ever left under the target's name, and refuses to replace an existing
//! file unless asked.

pub mod dataset;
pub mod dicom;
pub mod nifti;
pub mod nrrd;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::volume::Volume;

/// On-disk file formats tonno reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// NIfTI-1, single file, optionally gzipped.
    Nifti,
    /// NRRD, attached (`.nrrd`) or detached header (`.nhdr`).
    Nrrd,
    /// DICOM, read only: a folder holding one series, or a multi-frame file.
    Dicom,
}

/// Voxel types on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

impl DataType {
    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// Short lowercase name (`u8`, `f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }

    /// Decodes `n` little- or big-endian values of this type to f32.
    pub(crate) fn decode(self, bytes: &[u8], big_endian: bool, out: &mut Vec<f32>) {
        macro_rules! dec {
            ($t:ty) => {{
                const N: usize = std::mem::size_of::<$t>();
                out.extend(bytes.chunks_exact(N).map(|c| {
                    let arr: [u8; N] = c.try_into().expect("chunks_exact yields N bytes");
                    (if big_endian {
                        <$t>::from_be_bytes(arr)
                    } else {
                        <$t>::from_le_bytes(arr)
                    }) as f32
                }))
            }};
        }
        match self {
            Self::U8 => dec!(u8),
            Self::I8 => dec!(i8),
            Self::U16 => dec!(u16),
            Self::I16 => dec!(i16),
            Self::U32 => dec!(u32),
            Self::I32 => dec!(i32),
            Self::U64 => dec!(u64),
            Self::I64 => dec!(i64),
            Self::F32 => dec!(f32),
            Self::F64 => dec!(f64),
        }
    }

    /// Encodes f32 values as little-endian values of this type, rounding and
    /// saturating for integer types.
    pub(crate) fn encode_le(self, values: &[f32], out: &mut Vec<u8>) {
        macro_rules! enc {
            ($t:ty) => {
                for &v in values {
                    out.extend_from_slice(&(v.round() as $t).to_le_bytes());
                }
            };
        }
        match self {
            Self::U8 => enc!(u8),
            Self::I8 => enc!(i8),
            Self::U16 => enc!(u16),
            Self::I16 => enc!(i16),
            Self::U32 => enc!(u32),
            Self::I32 => enc!(i32),
            Self::U64 => enc!(u64),
            Self::I64 => enc!(i64),
            Self::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Self::F64 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&(v as f64).to_le_bytes())),
        }
    }
}

/// What a file said about itself, beside its voxels.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Its voxel type on disk (before `scl_slope`/`scl_inter` scaling).
    pub datatype: DataType,
    /// The NIfTI header, kept so that outputs can reuse its geometry fields
    /// exactly (qform, sform, their codes, units).
    pub nifti_header: Option<Box<::nifti::NiftiHeader>>,
    /// What a DICOM series said about itself (series, modality, tilt, ...).
    pub dicom: Option<Box<dicom::DicomInfo>>,
}

/// A volume read from a file, with what the file said about itself.
#[derive(Debug, Clone)]
pub struct Image {
    /// Voxels and geometry in RAS+ mm.
    pub volume: Volume,
    /// Source file details.
    pub info: ImageInfo,
}

/// Guesses the format from the file name; a folder is a DICOM series.
pub fn format_of(path: &Path) -> Result<Format> {
    if path.is_dir() {
        return Ok(Format::Dicom);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        Ok(Format::Nifti)
    } else if name.ends_with(".nrrd") || name.ends_with(".nhdr") {
        Ok(Format::Nrrd)
    } else if name.ends_with(".dcm") || name.ends_with(".dicom") {
        Ok(Format::Dicom)
    } else {
        Err(Error::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

/// The images of a folder, sorted by name: every file [`read_image`] would
/// take by its name and every sub-folder holding a DICOM series, except
/// hidden ones (`.tmp-PID-NAME`, the temporary files of
/// [`write_atomically`], among them). The one lister of input folders, so
/// that every command sees the same cases. A folder that is itself a DICOM
/// series is one image, not a list of them: see [`dicom::is_series_dir`].
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = e.path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let image = if p.is_dir() {
            dicom::is_series_dir(&p)
        } else {
            p.is_file() && is_image_file(&p)
        };
        if image && !hidden {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a file name looks like an image tonno reads.
pub fn is_image_file(path: &Path) -> bool {
    !path.is_dir() && format_of(path).is_ok()
}

/// The case name of an image: its name without `.nii.gz`, `.nii`, `.nrrd`,
/// `.nhdr`, `.dcm` or `.dicom` (a DICOM series folder: its name).
pub fn case_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for ext in [".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm", ".dicom"] {
        if lower.ends_with(ext) {
            return name[..name.len() - ext.len()].to_string();
        }
    }
    name
}

/// Reads an image (a file, or a folder holding a DICOM series), rejecting
/// NaN or infinite voxels.
pub fn read_image(path: &Path) -> Result<Image> {
    read_image_series(path, None)
}

/// [`read_image`], choosing DICOM series `series` (a SeriesInstanceUID)
/// when the folder holds several; `series` given for another format is an
/// error.
pub fn read_image_series(path: &Path, series: Option<&str>) -> Result<Image> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(Error::Read {
            path: path.to_path_buf(),
            source,
        });
    }
    let format = format_of(path)?;
    if series.is_some() && format != Format::Dicom {
        return Err(Error::invalid(
            "--series",
            format!(
                "{} is not DICOM; a series UID chooses among DICOM series",
                path.display()
            ),
        ));
    }
    let image = match format {
        Format::Nifti => nifti::read(path)?,
        Format::Nrrd => nrrd::read(path)?,
        Format::Dicom => dicom::read(path, series)?,
    };
    if let Some((count, first, channel)) = image.volume.find_non_finite() {
        return Err(Error::NonFinite {
            path: path.to_path_buf(),
            count,
            first,
            channel,
        });
    }
    Ok(image)
}

/// Writes a volume in the format its name says (`.nii`, `.nii.gz`, `.nrrd`,
/// `.nhdr` is not written). `reference` is the image the volume was derived
/// from: a NIfTI output copies its geometry fields. Refuses to replace an
/// existing file unless `overwrite`.
pub fn write_image(
    path: &Path,
    volume: &Volume,
    datatype: DataType,
    reference: Option<&ImageInfo>,
    overwrite: bool,
) -> Result<()> {
    match format_of(path)? {
        Format::Nifti => nifti::write(path, volume, datatype, reference, overwrite),
        Format::Nrrd => nrrd::write(path, volume, datatype, overwrite),
        Format::Dicom => Err(Error::invalid(
            "output format",
            format!(
                "{}: tonno reads DICOM but writes NIfTI (.nii, .nii.gz) or NRRD (.nrrd)",
                path.display()
            ),
        )),
    }
}

/// Writes `text` to `path` as [`write_atomically`] does.
pub fn write_text(path: &Path, text: &str, overwrite: bool) -> Result<()> {
    write_atomically(path, overwrite, |tmp| {
        std::fs::write(tmp, text).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Runs `write` on a temporary path beside `path` (same extension), then
/// renames it to `path`: a kill at any moment leaves either the old file
/// or the new one whole, never a part (and at worst a `.tmp-PID-NAME`
/// file, which no reader lists). The temporary file is removed on failure.
/// Every file tonno writes goes through here.
pub fn write_atomically(
    path: &Path,
    overwrite: bool,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if !overwrite && path.exists() {
        return Err(Error::Exists {
            path: path.to_path_buf(),
        });
    }
    let name = path
        .file_name()
        .ok_or_else(|| {
            Error::invalid(
                "output path",
                format!("{} has no file name", path.display()),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::Write {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("folder {} does not exist", dir.display()),
            ),
        });
    }
    // Keep the extension last: the NIfTI writer compresses by name.
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), name));
    let result = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The most values (voxels times channels) any reader accepts: 2^30, 4 GiB
/// as `f32`, more than a 512 x 512 x 2000 CT. An uncompressed file is also
/// held to its own length (the header's sizes must match the bytes there),
/// but compressed data can claim any size, so this bounds what a small
/// corrupt or hostile file can make a reader allocate.
pub const MAX_VALUES: usize = 1 << 30;

/// The number of values that `sizes` declare, refused (naming `path`) when
/// the product overflows or exceeds [`MAX_VALUES`]. Readers call this before
/// allocating anything sized by the header.
pub(crate) fn declared_values(path: &Path, sizes: &[usize]) -> Result<usize> {
    sizes
        .iter()
        .try_fold(1usize, |n, &s| n.checked_mul(s))
        .filter(|&n| n <= MAX_VALUES)
        .ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "the header declares sizes {sizes:?}, more than the {MAX_VALUES} values tonno reads"
                ),
            )
        })
}

/// Reads a whole file that must be a regular file: a device or a pipe
/// (`/dev/zero` behind a symlink or a NRRD `data file:` line) would be read
/// without end.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    std::fs::read(path).map_err(read_error)
}

/// The largest text file tonno reads (a config, labels CSV or
/// dataset.json): far beyond any real one, and a bound on what a wrong
/// path (a device, a scan given as a config) can make it hold.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Reads a text file: a regular file of at most [`MAX_TEXT_BYTES`], UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    if meta.len() > MAX_TEXT_BYTES {
        return Err(Error::format(
            path,
            format!(
                "{} bytes; a text file of tonno's is at most {MAX_TEXT_BYTES}",
                meta.len()
            ),
        ));
    }
    let bytes = read_file(path)?;
    String::from_utf8(bytes).map_err(|e| Error::format(path, format!("not UTF-8 text ({e})")))
}

/// Whether bytes start with the gzip magic.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses a gzip stream (all members), at most `limit + 1` bytes of
/// it, so that a caller can tell "too long" from "exactly `limit`" without
/// ever holding more than the header allows. Names `path` on failure.
pub(crate) fn gunzip(path: &Path, raw: &[u8], limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(raw)
        .take((limit as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::format(
                path,
                format!(
                    "corrupt or truncated gzip data ({e}) after {} decompressed bytes",
                    out.len()
                ),
            )
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_strip_image_extensions() {
        assert_eq!(case_name(Path::new("a/BRATS_001.nii.gz")), "BRATS_001");
        assert_eq!(case_name(Path::new("x.NRRD")), "x");
        assert_eq!(case_name(Path::new("scan.v2.nii")), "scan.v2");
        assert!(format_of(Path::new("scan.mha")).is_err());
    }

    #[test]
    fn atomic_write_refuses_to_overwrite_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.nii");
        std::fs::write(&p, b"keep").unwrap();
        let e = write_atomically(&p, false, |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Exists { .. }));
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
        let e = write_atomically(&p, true, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::invalid("x", "simulated failure"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
