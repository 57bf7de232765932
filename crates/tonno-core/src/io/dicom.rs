//! DICOM in: a folder holding a series of single-frame images (CT, MR or PET
//! slices as a scanner or a PACS export writes them), or an Enhanced
//! multi-frame file, becomes a [`Volume`] in RAS+ millimetres. tonno writes
//! its outputs as NIfTI on the series' grid; [`write_series`] exists so that
//! tests (and users who need one) can make a series from a volume.
//!
//! Geometry is the image plane module's (PS3.3 C.7.6.2): voxel `(i, j, k)` is
//! (column, row, slice), at LPS position `IPP_k + i Δc r + j Δr c`, where `r`
//! and `c` are ImageOrientationPatient's row and column direction cosines and
//! `[Δr, Δc]` is PixelSpacing (the spacing between rows first). Slices are
//! sorted along the normal `r × c`; the slice step comes from the positions,
//! never from SliceThickness, and must be regular (a missing slice is
//! refused). A CT gantry tilt (slices stacked along a direction that is not
//! the normal) is kept exactly, as a sheared affine: NIfTI's sform holds it.
//! LPS becomes RAS by negating x and y. Voxel values are modality values
//! (rescale slope and intercept applied, per frame in Enhanced files), as
//! `f32`, `i` fastest as in [`crate::volume`].

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use serde::Serialize;

use super::{DataType, Format, Image, ImageInfo, declared_values, write_atomically};
use crate::affine::{Affine, Vec3, cross, dot, norm, scale, sub};
use crate::error::{Error, Result};
use crate::volume::Volume;

/// How far apart two slices' steps may be, as a fraction of the median step,
/// before the series counts as irregular: positions are decimal strings
/// (rounded by the scanner), a missing slice doubles a step.
const STEP_TOLERANCE: f64 = 0.05;
/// The largest difference between two slices' direction cosines that still
/// counts as one orientation (scanners write about six decimals).
const ORIENTATION_TOLERANCE: f64 = 1e-3;
/// A tilt below this (degrees) is rounding, not a tilted gantry.
const TILT_EPSILON_DEG: f64 = 0.01;

/// What the DICOM files said, beside the voxels.
#[derive(Debug, Clone, Serialize)]
pub struct DicomInfo {
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// SeriesDescription (empty when absent).
    pub series_description: String,
    /// Modality (CT, MR, PT, ...).
    pub modality: String,
    /// SOP class of the images.
    pub sop_class_uid: String,
    /// Files read.
    pub files: usize,
    /// Slices (frames) in the volume.
    pub slices: usize,
    /// Whether the slices came from Enhanced multi-frame files.
    pub multi_frame: bool,
    /// Transfer syntax, as its name and UID.
    pub transfer_syntax: String,
    /// Rescale slope and intercept of the first slice (1 and 0 when absent).
    pub rescale: [f64; 2],
    /// Angle between the slice step and the slice normal, in degrees: zero
    /// unless the gantry was tilted (the affine is then sheared).
    pub gantry_tilt_deg: f64,
    /// Step between slice centres along the normal, in mm.
    pub slice_step_mm: f64,
}

/// One series of a folder, for choosing among several.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    pub series_uid: String,
    pub series_description: String,
    pub modality: String,
    /// Image files of the series in the folder.
    pub files: usize,
}

/// Whether `path` is a DICOM Part 10 file (the `DICM` magic after the
/// 128-byte preamble).
pub fn is_dicom_file(path: &Path) -> bool {
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..] == b"DICM"
}

/// Whether `dir` is a folder holding a DICOM series: one of its first files
/// (by name, hidden ones skipped) is a DICOM file. Sub-folders are not
/// searched: a series is one folder.
pub fn is_series_dir(dir: &Path) -> bool {
    dicom_candidates(dir)
        .map(|files| files.iter().take(16).any(|p| is_dicom_file(p)))
        .unwrap_or(false)
}

/// The regular, non-hidden files of a folder, sorted by name.
fn dicom_candidates(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(read_err)? {
        let p = e.map_err(read_err)?.path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// One slice's place: which file and frame, and its plane.
#[derive(Debug, Clone, Copy)]
struct Plane {
    file: usize,
    frame: u32,
    /// ImagePositionPatient, LPS mm.
    position: Vec3,
    /// ImageOrientationPatient: row then column direction cosines, LPS.
    orientation: [f64; 6],
    /// PixelSpacing: between rows, then between columns, mm.
    spacing: [f64; 2],
}

/// What one file's header holds that the volume needs.
#[derive(Debug)]
struct Header {
    path: PathBuf,
    series_uid: String,
    series_description: String,
    modality: String,
    sop_class_uid: String,
    transfer_syntax: String,
    rows: u32,
    columns: u32,
    frames: u32,
    bits_allocated: u32,
    signed: bool,
    /// SpacingBetweenSlices, else SliceThickness: only for a one-slice series.
    thickness: Option<f64>,
    planes: Vec<Plane>,
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("not a readable DICOM file ({e})"))
}

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default()
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag).and_then(|e| e.to_multi_float64().ok())
}

fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok())
}

/// The first item of sequence `seq` in `obj`.
fn first_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    obj.get(seq)?.items()?.first()
}

/// Attribute `tag` of frame `frame` in an Enhanced file: in the frame's own
/// functional group `group`, else in the shared one, else (when
/// `top_level`: single-frame files) at the top level.
fn frame_floats(
    obj: &InMemDicomObject,
    frame: u32,
    group: Tag,
    tag: Tag,
    top_level: bool,
) -> Option<Vec<f64>> {
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.get(frame as usize))
        .and_then(|item| first_item(item, group))
        .and_then(|g| floats(g, tag));
    per_frame
        .or_else(|| {
            first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
                .and_then(|shared| first_item(shared, group))
                .and_then(|g| floats(g, tag))
        })
        .or_else(|| top_level.then(|| floats(obj, tag)).flatten())
}

/// Checks that no element of the file declares more bytes than the file
/// has left, before dicom-rs sees it: its decoder reserves and zero-fills a
/// declared length before reading, so a corrupt 1 kB file could make it
/// allocate 4 GiB. Only element headers are read (tag, VR, length), in the
/// transfer syntax the file meta group names; a deflated data set is
/// checked by its inflated size instead (dicom-rs bounds it as it reads).
fn check_lengths(path: &Path) -> Result<()> {
    let bytes = super::read_file(path)?;
    let bad = |at: usize, why: String| {
        Err(Error::format(
            path,
            format!(
                "not a readable DICOM file ({why} at byte {at}, past its end: truncated or corrupt)"
            ),
        ))
    };
    let u16_at = |p: usize, be: bool| {
        bytes.get(p..p + 2).map(|b| {
            if be {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            }
        })
    };
    let u32_at = |p: usize, be: bool| {
        bytes.get(p..p + 4).map(|b| {
            let a = [b[0], b[1], b[2], b[3]];
            if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        })
    };
    const UNDEFINED: u32 = 0xffff_ffff;
    const SHORT_VRS: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    let mut pos = 132;
    // (explicit VR, big endian) of the data set; the meta group is explicit LE.
    let mut syntax = (true, false);
    let mut in_meta = true;
    let mut fragments = false;
    while pos + 8 <= bytes.len() {
        let group = u16_at(pos, false).unwrap_or(0);
        if in_meta && group != 0x0002 {
            in_meta = false;
        }
        let (explicit, be) = if in_meta { (true, false) } else { syntax };
        let group = u16_at(pos, be).unwrap_or(0);
        let element = u16_at(pos + 2, be).unwrap_or(0);
        if group == 0xfffe && matches!(element, 0xe000 | 0xe00d | 0xe0dd) {
            let len = u32_at(pos + 4, be).unwrap_or(0);
            pos += 8;
            if element == 0xe0dd {
                fragments = false;
            } else if element == 0xe000 && len != UNDEFINED && fragments {
                if len as usize > bytes.len().saturating_sub(pos) {
                    return bad(pos - 8, format!("a fragment of {len} bytes"));
                }
                pos += len as usize;
            }
            continue;
        }
        let (vr, len, head): (Option<[u8; 2]>, u32, usize) = if explicit {
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            // An unknown VR is read as UN, with the long form, as dicom-rs does.
            if SHORT_VRS.iter().any(|v| **v == vr) {
                (Some(vr), u16_at(pos + 6, be).unwrap_or(0) as u32, 8)
            } else {
                (Some(vr), u32_at(pos + 8, be).unwrap_or(0), 12)
            }
        } else {
            (None, u32_at(pos + 4, be).unwrap_or(0), 8)
        };
        let tag = Tag(group, element);
        if in_meta && tag == tags::TRANSFER_SYNTAX_UID {
            let end = (pos + head + len as usize).min(bytes.len());
            let uid = String::from_utf8_lossy(&bytes[(pos + head).min(end)..end]);
            let uid = uid.trim_end_matches(['\0', ' ']);
            syntax = match uid {
                "1.2.840.10008.1.2" => (false, false),
                "1.2.840.10008.1.2.2" => (true, true),
                // Deflated: the rest is compressed, nothing to walk.
                "1.2.840.10008.1.2.1.99" => return Ok(()),
                _ => (true, false),
            };
        }
        pos += head;
        if len == UNDEFINED {
            // A sequence's items, or encapsulated pixel data's fragments.
            let sequence = match vr {
                Some(v) => &v == b"SQ" || &v == b"UN",
                None => tag != tags::PIXEL_DATA,
            };
            fragments = !sequence;
            continue;
        }
        if len as usize > bytes.len().saturating_sub(pos) {
            return bad(
                pos - head,
                format!("element ({group:04X},{element:04X}) declaring {len} bytes"),
            );
        }
        let sequence = match vr {
            Some(v) => &v == b"SQ",
            None => matches!(
                dicom_core::dictionary::DataDictionary::by_tag(&dicom_dictionary_std::StandardDataDictionary, tag),
                Some(e) if e.vr.relaxed() == VR::SQ
            ),
        };
        if !sequence {
            pos += len as usize;
        }
    }
    Ok(())
}

fn read_header(path: &Path) -> Result<Option<Header>> {
    check_lengths(path)?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| open_error(path, e))?;
    let sop_class_uid = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0');
    // DICOMDIRs, structured reports, presentation states: not images.
    let Some(rows) = uint(&obj, tags::ROWS) else {
        return Ok(None);
    };
    let columns = uint(&obj, tags::COLUMNS)
        .ok_or_else(|| Error::format(path, "an image without Columns (0028,0011)"))?;
    let samples_per_pixel = uint(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if samples_per_pixel != 1 {
        let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION);
        return Err(Error::format(
            path,
            format!(
                "{samples_per_pixel} samples per pixel ({photometric}: a colour image); tonno \
                 reads greyscale volumes"
            ),
        ));
    }
    let frames = match obj.get(tags::NUMBER_OF_FRAMES) {
        None => 1,
        Some(e) => e
            .to_int::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Error::format(path, "NumberOfFrames (0028,0008) is not a count"))?,
    };
    // dicom-pixeldata asserts on these; a corrupt header is an error here.
    let bits_allocated = uint(&obj, tags::BITS_ALLOCATED)
        .ok_or_else(|| Error::format(path, "an image without BitsAllocated (0028,0100)"))?;
    let bits_stored = uint(&obj, tags::BITS_STORED).unwrap_or(bits_allocated);
    let high_bit = uint(&obj, tags::HIGH_BIT).unwrap_or(bits_stored.saturating_sub(1));
    if ![8, 16, 32].contains(&bits_allocated)
        || !(1..=bits_allocated).contains(&bits_stored)
        || high_bit >= bits_allocated
        || high_bit + 1 < bits_stored
    {
        return Err(Error::format(
            path,
            format!(
                "BitsAllocated {bits_allocated}, BitsStored {bits_stored}, HighBit {high_bit}: \
                 not a pixel layout tonno reads (8, 16 or 32 bits allocated, the stored bits \
                 within them)"
            ),
        ));
    }
    if rows == 0 || columns == 0 {
        return Err(Error::format(
            path,
            format!("{columns} x {rows} pixels: no pixels"),
        ));
    }
    declared_values(path, &[rows as usize, columns as usize, frames as usize])?;
    let mut planes = Vec::with_capacity(frames as usize);
    for frame in 0..frames {
        let what = |name: &str, tag: &str| {
            let at = if frames > 1 {
                format!(
                    " for frame {} (an Enhanced multi-frame image places each frame in its \
                     PerFrameFunctionalGroupsSequence)",
                    frame + 1
                )
            } else {
                String::new()
            };
            Error::format(
                path,
                format!(
                    "no usable {name} {tag}{at}: tonno reads cross-sectional images (CT, MR, PET), \
                     whose slices say where they are"
                ),
            )
        };
        let position = frame_floats(
            &obj,
            frame,
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
            // A multi-frame file without per-frame positions (RT dose, NM,
            // a classic multi-frame MR) would put every frame at one place.
            frames == 1,
        )
        .filter(|v| v.len() == 3 && v.iter().all(|x| x.is_finite()))
        .ok_or_else(|| what("ImagePositionPatient", "(0020,0032)"))?;
        let orientation = frame_floats(
            &obj,
            frame,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
            true,
        )
        .filter(|v| v.len() == 6 && v.iter().all(|x| x.is_finite()))
        .ok_or_else(|| what("ImageOrientationPatient", "(0020,0037)"))?;
        let spacing = frame_floats(
            &obj,
            frame,
            tags::PIXEL_MEASURES_SEQUENCE,
            tags::PIXEL_SPACING,
            true,
        )
        .filter(|v| v.len() == 2 && v.iter().all(|x| x.is_finite() && *x > 0.0))
        .ok_or_else(|| what("PixelSpacing", "(0028,0030)"))?;
        planes.push(Plane {
            file: 0,
            frame,
            position: [position[0], position[1], position[2]],
            orientation: orientation.try_into().expect("checked length 6"),
            spacing: [spacing[0], spacing[1]],
        });
    }
    Ok(Some(Header {
        path: path.to_path_buf(),
        series_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        series_description: text(&obj, tags::SERIES_DESCRIPTION),
        modality: text(&obj, tags::MODALITY),
        sop_class_uid: sop_class_uid.to_string(),
        transfer_syntax: obj
            .meta()
            .transfer_syntax()
            .trim_end_matches('\0')
            .to_string(),
        rows,
        columns,
        frames,
        bits_allocated,
        signed: uint(&obj, tags::PIXEL_REPRESENTATION) == Some(1),
        thickness: floats(&obj, tags::SPACING_BETWEEN_SLICES)
            .or_else(|| floats(&obj, tags::SLICE_THICKNESS))
            .and_then(|v| v.first().copied())
            .filter(|t| t.is_finite() && *t > 0.0),
        planes,
    }))
}

/// The series held by a folder, in UID order.
pub fn series_in(dir: &Path) -> Result<Vec<SeriesSummary>> {
    let headers = read_headers(dir)?;
    Ok(summaries(&headers))
}

fn summaries(headers: &[Header]) -> Vec<SeriesSummary> {
    let mut by_uid: BTreeMap<&str, SeriesSummary> = BTreeMap::new();
    for h in headers {
        by_uid
            .entry(&h.series_uid)
            .or_insert_with(|| SeriesSummary {
                series_uid: h.series_uid.clone(),
                series_description: h.series_description.clone(),
                modality: h.modality.clone(),
                files: 0,
            })
            .files += 1;
    }
    by_uid.into_values().collect()
}

/// The image headers of a folder's DICOM files; other files are skipped, a
/// DICOM file that cannot be read is an error naming it.
fn read_headers(dir: &Path) -> Result<Vec<Header>> {
    let mut headers = Vec::new();
    for p in dicom_candidates(dir)? {
        if is_dicom_file(&p)
            && let Some(h) = read_header(&p)?
        {
            headers.push(h);
        }
    }
    if headers.is_empty() {
        return Err(Error::format(dir, "holds no DICOM image files"));
    }
    Ok(headers)
}

/// Reads a DICOM series (a folder) or an Enhanced multi-frame file.
/// `series` chooses a SeriesInstanceUID when the folder holds several.
pub fn read(path: &Path, series: Option<&str>) -> Result<Image> {
    let headers = if path.is_dir() {
        read_headers(path)?
    } else {
        let h = read_header(path)?
            .ok_or_else(|| Error::format(path, "a DICOM file without an image in it"))?;
        if h.frames == 1 {
            return Err(Error::format(
                path,
                "a single-frame DICOM file is one slice; give the folder that holds its series",
            ));
        }
        vec![h]
    };
    let chosen = choose_series(path, headers, series)?;
    assemble(path, chosen)
}

fn choose_series(path: &Path, headers: Vec<Header>, series: Option<&str>) -> Result<Vec<Header>> {
    let all = summaries(&headers);
    let list = || {
        all.iter()
            .map(|s| {
                format!(
                    "  {} ({} file(s), {} {:?})",
                    s.series_uid, s.files, s.modality, s.series_description
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    match series {
        Some(uid) => {
            let chosen: Vec<Header> = headers
                .into_iter()
                .filter(|h| h.series_uid == uid)
                .collect();
            if chosen.is_empty() {
                return Err(Error::format(
                    path,
                    format!("holds no series {uid}; its series are:\n{}", list()),
                ));
            }
            Ok(chosen)
        }
        None if all.len() > 1 => Err(Error::format(
            path,
            format!(
                "holds {} series; choose one with --series UID:\n{}",
                all.len(),
                list()
            ),
        )),
        None => Ok(headers),
    }
}

/// Sorts the series' slices, checks that they make one regular volume, and
/// decodes them into it.
fn assemble(path: &Path, mut headers: Vec<Header>) -> Result<Image> {
    headers.sort_by(|a, b| a.path.cmp(&b.path));
    let first = &headers[0];
    for h in &headers {
        if (h.rows, h.columns) != (first.rows, first.columns) {
            return Err(Error::format(
                &h.path,
                format!(
                    "{} x {} pixels, but {} has {} x {}: the series is not one volume",
                    h.columns,
                    h.rows,
                    first.path.display(),
                    first.columns,
                    first.rows
                ),
            ));
        }
        check_transfer_syntax(&h.path, &h.transfer_syntax)?;
    }
    let mut planes: Vec<Plane> = Vec::new();
    for (f, h) in headers.iter().enumerate() {
        planes.extend(h.planes.iter().map(|&p| Plane { file: f, ..p }));
    }
    let where_ = |p: &Plane| {
        let h = &headers[p.file];
        if h.frames > 1 {
            format!("{} frame {}", h.path.display(), p.frame + 1)
        } else {
            h.path.display().to_string()
        }
    };
    let o = planes[0].orientation;
    for p in &planes {
        let d = (0..6)
            .map(|c| (p.orientation[c] - o[c]).abs())
            .fold(0.0, f64::max);
        if d > ORIENTATION_TOLERANCE {
            return Err(Error::format(
                path,
                format!(
                    "slices in different orientations ({} and {}): a localizer or several stacks \
                     share the series; move them out or choose another series",
                    where_(&planes[0]),
                    where_(p)
                ),
            ));
        }
        if (0..2).any(|a| (p.spacing[a] - planes[0].spacing[a]).abs() > 1e-3 * p.spacing[a]) {
            return Err(Error::format(
                path,
                format!(
                    "slices with different pixel spacings ({} and {})",
                    where_(&planes[0]),
                    where_(p)
                ),
            ));
        }
    }
    let row_dir: Vec3 = [o[0], o[1], o[2]];
    let col_dir: Vec3 = [o[3], o[4], o[5]];
    let (nr, nc) = (norm(row_dir), norm(col_dir));
    if (nr - 1.0).abs() > 0.01 || (nc - 1.0).abs() > 0.01 || dot(row_dir, col_dir).abs() > 0.01 {
        return Err(Error::format(
            path,
            format!(
                "ImageOrientationPatient {o:?} is not two orthogonal unit vectors ({})",
                where_(&planes[0])
            ),
        ));
    }
    let row_dir = scale(row_dir, 1.0 / nr);
    let col_dir = scale(col_dir, 1.0 / nc);
    let normal = cross(row_dir, col_dir);
    planes.sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
    let n = planes.len();
    let [row_spacing, col_spacing] = planes[0].spacing;
    let (step, tilt_deg) = if n == 1 {
        (0.0, 0.0)
    } else {
        check_spacing(path, &planes, normal, &where_)?
    };
    let slice_vector = if n == 1 {
        // One slice (a multi-frame file of one frame never gets here; a
        // series of one slice does): its thickness along the normal, so
        // that the affine is invertible.
        scale(normal, headers[0].thickness.unwrap_or(1.0))
    } else {
        scale(
            sub(planes[n - 1].position, planes[0].position),
            1.0 / (n - 1) as f64,
        )
    };
    let lps = Affine::from_columns(
        [
            scale(row_dir, col_spacing),
            scale(col_dir, row_spacing),
            slice_vector,
        ],
        planes[0].position,
    );
    let affine = lps.lps_to_ras();

    let (nx, ny) = (first.columns as usize, first.rows as usize);
    let voxels = declared_values(path, &[nx, ny, n])?;
    let mut data = vec![0f32; voxels];
    let mut slot_of: BTreeMap<(usize, u32), usize> = BTreeMap::new();
    for (k, p) in planes.iter().enumerate() {
        slot_of.insert((p.file, p.frame), k);
    }
    let mut rescale = [1.0, 0.0];
    for (f, h) in headers.iter().enumerate() {
        let obj = dicom_object::open_file(&h.path).map_err(|e| open_error(&h.path, e))?;
        let (first_rescale, frames) = decode_frames(&h.path, &obj, nx * ny, h.frames)?;
        if f == 0 {
            rescale = first_rescale;
        }
        for (frame, values) in frames.into_iter().enumerate() {
            let k = slot_of[&(f, frame as u32)];
            data[k * nx * ny..(k + 1) * nx * ny].copy_from_slice(&values);
        }
    }
    let volume = Volume::new(data, [nx, ny, n], 1, affine)
        .map_err(|e| Error::format(path, format!("unusable geometry: {e}")))?;
    let datatype = match (first.bits_allocated, first.signed) {
        (8, false) => DataType::U8,
        (8, true) => DataType::I8,
        (16, false) => DataType::U16,
        (16, true) => DataType::I16,
        (32, false) => DataType::U32,
        (32, true) => DataType::I32,
        _ => DataType::F32,
    };
    let ts = TransferSyntaxRegistry
        .get(&first.transfer_syntax)
        .map(|t| format!("{} ({})", t.name(), t.uid()))
        .unwrap_or_else(|| first.transfer_syntax.clone());
    let dicom = DicomInfo {
        series_uid: first.series_uid.clone(),
        series_description: first.series_description.clone(),
        modality: first.modality.clone(),
        sop_class_uid: first.sop_class_uid.clone(),
        files: headers.len(),
        slices: n,
        multi_frame: headers.iter().any(|h| h.frames > 1),
        transfer_syntax: ts,
        rescale,
        gantry_tilt_deg: tilt_deg,
        slice_step_mm: step,
    };
    Ok(Image {
        volume,
        info: ImageInfo {
            path: path.to_path_buf(),
            format: Format::Dicom,
            datatype,
            nifti_header: None,
            dicom: Some(Box::new(dicom)),
        },
    })
}

/// Checks that the slices are evenly stepped along one line and returns
/// the step along the normal (mm) and the tilt of that line from the
/// normal (degrees).
fn check_spacing(
    path: &Path,
    planes: &[Plane],
    normal: Vec3,
    where_: &dyn Fn(&Plane) -> String,
) -> Result<(f64, f64)> {
    let n = planes.len();
    let along: Vec<f64> = planes.iter().map(|p| dot(p.position, normal)).collect();
    let mut steps: Vec<f64> = along.windows(2).map(|w| w[1] - w[0]).collect();
    for (s, w) in steps.iter().zip(planes.windows(2)) {
        if *s < 1e-3 {
            return Err(Error::format(
                path,
                format!(
                    "{} and {} are at the same position: several acquisitions (echoes, time \
                     points, stacks) share the series; tonno reads one volume",
                    where_(&w[0]),
                    where_(&w[1])
                ),
            ));
        }
    }
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    for (s, w) in steps.iter_mut().zip(planes.windows(2)) {
        if (*s - median).abs() > STEP_TOLERANCE * median {
            let missing = (*s / median).round() as i64 - 1;
            let hint = if missing >= 1 {
                format!(" ({missing} slice(s) missing?)")
            } else {
                String::new()
            };
            return Err(Error::format(
                path,
                format!(
                    "irregular slice spacing: {:.3} mm between {} and {}, {median:.3} mm elsewhere{hint}",
                    *s,
                    where_(&w[0]),
                    where_(&w[1])
                ),
            ));
        }
    }
    let step_vector = scale(
        sub(planes[n - 1].position, planes[0].position),
        1.0 / (n - 1) as f64,
    );
    for (k, p) in planes.iter().enumerate() {
        let expected = crate::affine::add(planes[0].position, scale(step_vector, k as f64));
        if norm(sub(p.position, expected)) > STEP_TOLERANCE * median {
            return Err(Error::format(
                path,
                format!(
                    "{} is {:.3} mm off the line through the other slices' positions: the \
                     series is not one straight stack",
                    where_(p),
                    norm(sub(p.position, expected))
                ),
            ));
        }
    }
    let cos = (dot(step_vector, normal) / norm(step_vector)).clamp(-1.0, 1.0);
    let tilt = cos.acos().to_degrees();
    let tilt = if tilt < TILT_EPSILON_DEG { 0.0 } else { tilt };
    Ok((median, tilt))
}

/// Refuses, naming it, a transfer syntax whose pixel data tonno cannot decode.
fn check_transfer_syntax(path: &Path, uid: &str) -> Result<()> {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) if ts.can_decode_all() => Ok(()),
        Some(ts) => Err(Error::format(
            path,
            format!(
                "its pixel data is compressed as {} ({}), which tonno cannot decode (it reads \
                 uncompressed, deflated, RLE and JPEG baseline/lossless data); decompress the \
                 series first, e.g. with `gdcmconv --raw` or `dcmdjpeg`",
                ts.name(),
                ts.uid()
            ),
        )),
        None => Err(Error::format(
            path,
            format!("unknown transfer syntax {uid}"),
        )),
    }
}

/// Decodes every frame of a file to modality values, and returns the first
/// frame's rescale slope and intercept too.
fn decode_frames(
    path: &Path,
    obj: &DefaultDicomObject,
    pixels: usize,
    frames: u32,
) -> Result<([f64; 2], Vec<Vec<f32>>)> {
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| Error::format(path, format!("cannot decode its pixel data ({e})")))?;
    let rescale = decoded
        .rescale()
        .ok()
        .and_then(|r| r.first())
        .map(|r| [r.slope, r.intercept])
        .unwrap_or([1.0, 0.0]);
    let mut out = Vec::with_capacity(frames as usize);
    for frame in 0..frames {
        let values: Vec<f32> = decoded.to_vec_frame(frame).map_err(|e| {
            Error::format(
                path,
                format!("cannot decode frame {} of its pixel data ({e})", frame + 1),
            )
        })?;
        if values.len() != pixels {
            return Err(Error::format(
                path,
                format!(
                    "frame {} holds {} pixels, not the {pixels} its header declares (truncated?)",
                    frame + 1,
                    values.len()
                ),
            ));
        }
        out.push(values);
    }
    Ok((rescale, out))
}

/// How [`write_series`] stores a volume.
#[derive(Debug, Clone)]
pub struct SeriesOptions {
    /// Modality (CT, MR, ...); the SOP class follows from it.
    pub modality: String,
    /// Stored values are `round((v - intercept) / slope)` as `i16`.
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    /// One Enhanced multi-frame file instead of one file per slice.
    pub multi_frame: bool,
    /// The series' UID root: the series is `ROOT.1`, slice `k` `ROOT.1.k`.
    pub uid_root: String,
    pub series_description: String,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        Self {
            modality: "MR".into(),
            rescale_slope: 1.0,
            rescale_intercept: 0.0,
            multi_frame: false,
            uid_root: "2.25.1234567".into(),
            series_description: "tonno".into(),
        }
    }
}

/// Writes channel 0 of `volume` as a DICOM series in `dir` (created if
/// missing): `slice_NNNN.dcm` per slice, or `multiframe.dcm` (Enhanced CT or
/// MR), explicit VR little endian, signed 16-bit stored values. The volume's
/// first two voxel axes must be orthogonal (they become the rows and
/// columns); a third axis off their normal is written as a gantry tilt.
/// Refuses to write into a folder that holds files unless `overwrite`.
pub fn write_series(
    dir: &Path,
    volume: &Volume,
    options: &SeriesOptions,
    overwrite: bool,
) -> Result<()> {
    let lps = volume.world_from_voxel().lps_to_ras();
    let (a, b) = (lps.column(0), lps.column(1));
    let (col_spacing, row_spacing) = (norm(a), norm(b));
    if dot(a, b).abs() > 1e-6 * col_spacing * row_spacing {
        return Err(Error::invalid(
            "DICOM series geometry",
            "the volume's first two axes are not orthogonal, so they cannot be DICOM rows and columns",
        ));
    }
    if !(options.rescale_slope.is_finite() && options.rescale_slope > 0.0) {
        return Err(Error::invalid(
            "rescale slope",
            format!("{} is not a positive number", options.rescale_slope),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    if !overwrite && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Exists {
            path: dir.to_path_buf(),
        });
    }
    let [nx, ny, nz] = volume.shape();
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(Error::invalid(
            "DICOM series",
            format!("{nx} x {ny} pixels: DICOM holds at most 65535 rows and columns"),
        ));
    }
    let orientation: Vec<f64> = scale(a, 1.0 / col_spacing)
        .into_iter()
        .chain(scale(b, 1.0 / row_spacing))
        .collect();
    let stored = |k: usize| -> Vec<u8> {
        let mut bytes = Vec::with_capacity(nx * ny * 2);
        for j in 0..ny {
            for i in 0..nx {
                let v = (volume.get(i, j, k, 0) as f64 - options.rescale_intercept)
                    / options.rescale_slope;
                let s = v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16;
                bytes.extend_from_slice(&s.to_le_bytes());
            }
        }
        bytes
    };
    let position = |k: usize| lps.apply([0.0, 0.0, k as f64]);
    let ds = |v: &[f64]| PrimitiveValue::Strs(v.iter().map(|x| format!("{x:.6}")).collect());
    let enhanced = options.multi_frame;
    let sop_class = match (options.modality.as_str(), enhanced) {
        ("CT", false) => "1.2.840.10008.5.1.4.1.1.2",
        ("CT", true) => "1.2.840.10008.5.1.4.1.1.2.1",
        (_, false) => "1.2.840.10008.5.1.4.1.1.4",
        (_, true) => "1.2.840.10008.5.1.4.1.1.4.1",
    };
    let series_uid = format!("{}.1", options.uid_root);
    let common = |obj: &mut InMemDicomObject, sop_uid: &str| {
        let put_str = |obj: &mut InMemDicomObject, tag: Tag, vr: VR, s: &str| {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
        };
        put_str(obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
        put_str(obj, tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
        put_str(
            obj,
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            &format!("{}.2", options.uid_root),
        );
        put_str(obj, tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
        put_str(
            obj,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &format!("{}.3", options.uid_root),
        );
        put_str(obj, tags::MODALITY, VR::CS, &options.modality);
        put_str(
            obj,
            tags::SERIES_DESCRIPTION,
            VR::LO,
            &options.series_description,
        );
        put_str(obj, tags::PATIENT_NAME, VR::PN, "tonno^test");
        put_str(obj, tags::PATIENT_ID, VR::LO, "tonno");
        put_str(obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        let put_u16 = |obj: &mut InMemDicomObject, tag: Tag, v: u16| {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        };
        put_u16(obj, tags::SAMPLES_PER_PIXEL, 1);
        put_u16(obj, tags::ROWS, ny as u16);
        put_u16(obj, tags::COLUMNS, nx as u16);
        put_u16(obj, tags::BITS_ALLOCATED, 16);
        put_u16(obj, tags::BITS_STORED, 16);
        put_u16(obj, tags::HIGH_BIT, 15);
        put_u16(obj, tags::PIXEL_REPRESENTATION, 1);
    };
    let save = |obj: InMemDicomObject, file: PathBuf| -> Result<()> {
        let file_obj = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .implementation_class_uid("2.25.1234567.99"),
            )
            .map_err(|e| Error::invalid("DICOM file meta", e.to_string()))?;
        write_atomically(&file, overwrite, |tmp| {
            file_obj.write_to_file(tmp).map_err(|e| Error::Write {
                path: file.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })
    };
    let spacing_value = ds(&[row_spacing, col_spacing]);
    let rescale = [options.rescale_slope, options.rescale_intercept];
    if !enhanced {
        for k in 0..nz {
            let mut obj = InMemDicomObject::new_empty();
            common(&mut obj, &format!("{series_uid}.{}", k + 1));
            obj.put(DataElement::new(
                tags::INSTANCE_NUMBER,
                VR::IS,
                PrimitiveValue::from((k + 1).to_string()),
            ));
            obj.put(DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                ds(&position(k)),
            ));
            obj.put(DataElement::new(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                ds(&orientation),
            ));
            obj.put(DataElement::new(
                tags::PIXEL_SPACING,
                VR::DS,
                spacing_value.clone(),
            ));
            obj.put(DataElement::new(
                tags::RESCALE_SLOPE,
                VR::DS,
                ds(&rescale[..1]),
            ));
            obj.put(DataElement::new(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                ds(&rescale[1..]),
            ));
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(stored(k)),
            ));
            save(obj, dir.join(format!("slice_{:04}.dcm", k + 1)))?;
        }
        return Ok(());
    }
    let group = |seq: Tag, elems: Vec<DataElement<InMemDicomObject>>| {
        DataElement::new(
            seq,
            VR::SQ,
            DataSetSequence::from(vec![InMemDicomObject::from_element_iter(elems)]),
        )
    };
    let shared = InMemDicomObject::from_element_iter([
        group(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![DataElement::new(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                ds(&orientation),
            )],
        ),
        group(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![DataElement::new(tags::PIXEL_SPACING, VR::DS, spacing_value)],
        ),
        group(
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![
                DataElement::new(tags::RESCALE_SLOPE, VR::DS, ds(&rescale[..1])),
                DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, ds(&rescale[1..])),
                DataElement::new(tags::RESCALE_TYPE, VR::LO, PrimitiveValue::from("US")),
            ],
        ),
    ]);
    let per_frame: Vec<InMemDicomObject> = (0..nz)
        .map(|k| {
            InMemDicomObject::from_element_iter([group(
                tags::PLANE_POSITION_SEQUENCE,
                vec![DataElement::new(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    ds(&position(k)),
                )],
            )])
        })
        .collect();
    let mut obj = InMemDicomObject::new_empty();
    common(&mut obj, &format!("{series_uid}.1"));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from(nz.to_string()),
    ));
    obj.put(DataElement::new(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![shared]),
    ));
    obj.put(DataElement::new(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(per_frame),
    ));
    let pixels: Vec<u8> = (0..nz).flat_map(stored).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    ));
    save(obj, dir.join("multiframe.dcm"))
}
