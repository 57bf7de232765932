//! NIfTI-1 single-file images (`.nii`, `.nii.gz`).
//!
//! Header parsing and the low-level writer come from the `nifti` crate; this
//! module adds what it lacks: the choice of affine (sform over qform, as the
//! standard says), the qform quaternion from an affine, strict checks of the
//! data size against the header, and atomic writes that keep the geometry of
//! a reference image.

use std::path::Path;

use ::nifti::writer::WriterOptions;
use ::nifti::{NiftiHeader, NiftiType};
use ndarray::{ArrayView, IxDyn, ShapeBuilder};

use super::{
    DataType, Format, Image, ImageInfo, declared_values, gunzip, is_gzip, read_file,
    write_atomically,
};
use crate::affine::{Affine, Vec3, dot, norm};
use crate::error::{Error, Result};
use crate::volume::Volume;

const HEADER_BYTES: usize = 348;

fn datatype_of(path: &Path, header: &NiftiHeader) -> Result<DataType> {
    let code = header.datatype;
    let t = header
        .data_type()
        .map_err(|_| Error::format(path, format!("unknown NIfTI datatype code {code}")))?;
    Ok(match t {
        NiftiType::Uint8 => DataType::U8,
        NiftiType::Int8 => DataType::I8,
        NiftiType::Uint16 => DataType::U16,
        NiftiType::Int16 => DataType::I16,
        NiftiType::Uint32 => DataType::U32,
        NiftiType::Int32 => DataType::I32,
        NiftiType::Uint64 => DataType::U64,
        NiftiType::Int64 => DataType::I64,
        NiftiType::Float32 => DataType::F32,
        NiftiType::Float64 => DataType::F64,
        other => {
            return Err(Error::format(
                path,
                format!(
                    "NIfTI datatype {other:?} (code {code}) is not supported: use an integer or float scalar type"
                ),
            ));
        }
    })
}

fn nifti_type(dt: DataType) -> NiftiType {
    match dt {
        DataType::U8 => NiftiType::Uint8,
        DataType::I8 => NiftiType::Int8,
        DataType::U16 => NiftiType::Uint16,
        DataType::I16 => NiftiType::Int16,
        DataType::U32 => NiftiType::Uint32,
        DataType::I32 => NiftiType::Int32,
        DataType::U64 => NiftiType::Uint64,
        DataType::I64 => NiftiType::Int64,
        DataType::F32 => NiftiType::Float32,
        DataType::F64 => NiftiType::Float64,
    }
}

/// Voxel-to-world affine from the quaternion fields (NIfTI "method 2").
pub fn qform_affine(h: &NiftiHeader) -> Affine {
    let (mut b, mut c, mut d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let sq = b * b + c * c + d * d;
    let a = if 1.0 - sq < 1e-7 {
        // Rounding put the quaternion on or past the unit sphere: renormalise
        // and take a 180-degree rotation, as nifti1_io does.
        let s = 1.0 / sq.sqrt();
        b *= s;
        c *= s;
        d *= s;
        0.0
    } else {
        (1.0 - sq).sqrt()
    };
    let pix = |v: f32| {
        if v > 0.0 {
            v as f64
        } else if v < 0.0 {
            -v as f64
        } else {
            1.0
        }
    };
    let (dx, dy) = (pix(h.pixdim[1]), pix(h.pixdim[2]));
    let dz = if h.pixdim[0] < 0.0 {
        -pix(h.pixdim[3])
    } else {
        pix(h.pixdim[3])
    };
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let cols = [
        [r[0][0] * dx, r[1][0] * dx, r[2][0] * dx],
        [r[0][1] * dy, r[1][1] * dy, r[2][1] * dy],
        [r[0][2] * dz, r[1][2] * dz, r[2][2] * dz],
    ];
    Affine::from_columns(
        cols,
        [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
    )
}

/// Voxel-to-world affine from the `srow_*` fields (NIfTI "method 3").
pub fn sform_affine(h: &NiftiHeader) -> Affine {
    let row = |r: [f32; 4]| r.map(|v| v as f64);
    Affine([
        row(h.srow_x),
        row(h.srow_y),
        row(h.srow_z),
        [0.0, 0.0, 0.0, 1.0],
    ])
}

/// The affine a NIfTI reader should use: the sform when `sform_code > 0`,
/// else the qform when `qform_code > 0`, else (neither set, an ANALYZE-style
/// header) nibabel's fallback: `pixdim` spacing with x flipped and the
/// origin at the grid centre.
pub fn best_affine(h: &NiftiHeader) -> Affine {
    if h.sform_code > 0 {
        sform_affine(h)
    } else if h.qform_code > 0 {
        qform_affine(h)
    } else {
        let z = |v: f32| if v != 0.0 { v.abs() as f64 } else { 1.0 };
        let zooms = [-z(h.pixdim[1]), z(h.pixdim[2]), z(h.pixdim[3])];
        let origin: Vec3 = [1, 2, 3].map(|d| (h.dim[d].max(1) as f64 - 1.0) / 2.0);
        Affine::from_diagonal(zooms, [0, 1, 2].map(|d| -zooms[d] * origin[d]))
    }
}

/// Nearest rotation to a 3x3 matrix (polar decomposition by Newton iteration).
fn nearest_rotation(mut q: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    for _ in 0..50 {
        // q <- (q + q^-T) / 2
        let det = q[0][0] * (q[1][1] * q[2][2] - q[1][2] * q[2][1])
            - q[0][1] * (q[1][0] * q[2][2] - q[1][2] * q[2][0])
            + q[0][2] * (q[1][0] * q[2][1] - q[1][1] * q[2][0]);
        if det.abs() < 1e-12 {
            break;
        }
        // Inverse transpose = cofactor matrix / det.
        let cof = [
            [
                q[1][1] * q[2][2] - q[1][2] * q[2][1],
                q[1][2] * q[2][0] - q[1][0] * q[2][2],
                q[1][0] * q[2][1] - q[1][1] * q[2][0],
            ],
            [
                q[0][2] * q[2][1] - q[0][1] * q[2][2],
                q[0][0] * q[2][2] - q[0][2] * q[2][0],
                q[0][1] * q[2][0] - q[0][0] * q[2][1],
            ],
            [
                q[0][1] * q[1][2] - q[0][2] * q[1][1],
                q[0][2] * q[1][0] - q[0][0] * q[1][2],
                q[0][0] * q[1][1] - q[0][1] * q[1][0],
            ],
        ];
        let mut delta = 0.0f64;
        for r in 0..3 {
            for c in 0..3 {
                let v = 0.5 * (q[r][c] + cof[r][c] / det);
                delta = delta.max((v - q[r][c]).abs());
                q[r][c] = v;
            }
        }
        if delta < 1e-14 {
            break;
        }
    }
    q
}

/// Quaternion parameters `(b, c, d, qfac, pixdim)` for an affine's linear
/// part, following nifti1_io's `nifti_mat44_to_quatern` (nearest rotation
/// when the axes are not orthogonal; qfac = -1 for a left-handed grid).
pub fn affine_to_quaternion(a: &Affine) -> ([f64; 3], f64, Vec3) {
    let mut spacing = [0.0; 3];
    let mut m = [[0.0; 3]; 3]; // m[row][col]
    for c in 0..3 {
        let col = a.column(c);
        let n = norm(col);
        spacing[c] = if n > 0.0 { n } else { 1.0 };
        for r in 0..3 {
            m[r][c] = if n > 0.0 {
                col[r] / n
            } else if r == c {
                1.0
            } else {
                0.0
            };
        }
    }
    let mut q = nearest_rotation(m);
    let det = q[0][0] * (q[1][1] * q[2][2] - q[1][2] * q[2][1])
        - q[0][1] * (q[1][0] * q[2][2] - q[1][2] * q[2][0])
        + q[0][2] * (q[1][0] * q[2][1] - q[1][1] * q[2][0]);
    let qfac = if det > 0.0 { 1.0 } else { -1.0 };
    if qfac < 0.0 {
        for row in q.iter_mut() {
            row[2] = -row[2];
        }
    }
    let (r11, r12, r13) = (q[0][0], q[0][1], q[0][2]);
    let (r21, r22, r23) = (q[1][0], q[1][1], q[1][2]);
    let (r31, r32, r33) = (q[2][0], q[2][1], q[2][2]);
    let trace1 = r11 + r22 + r33 + 1.0;
    let (qa, mut b, mut c, mut d);
    if trace1 > 0.5 {
        qa = 0.5 * trace1.sqrt();
        b = 0.25 * (r32 - r23) / qa;
        c = 0.25 * (r13 - r31) / qa;
        d = 0.25 * (r21 - r12) / qa;
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r12 + r21) / b;
            d = 0.25 * (r13 + r31) / b;
            qa = 0.25 * (r32 - r23) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r12 + r21) / c;
            d = 0.25 * (r23 + r32) / c;
            qa = 0.25 * (r13 - r31) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r13 + r31) / d;
            c = 0.25 * (r23 + r32) / d;
            qa = 0.25 * (r21 - r12) / d;
        }
        // The standard keeps the quaternion's scalar part non-negative.
        if qa < 0.0 {
            b = -b;
            c = -c;
            d = -d;
        }
    }
    ([b, c, d], qfac, spacing)
}

/// Reads a NIfTI-1 image (gzipped or not) into RAS+ world coordinates.
/// Dimensions 4 to 7 are flattened into channels.
// Long on purpose: the header's checks in the order the format lays its
// fields out, each before anything sized by it is allocated; the reader is
// fuzzed as one piece (tests/fuzz.rs).
pub fn read(path: &Path) -> Result<Image> {
    let raw = read_file(path)?;
    let gzipped = is_gzip(&raw);
    // A compressed file is opened twice: its header first, so that the data
    // are decompressed only as far as the header says they go.
    let head = if gzipped {
        gunzip(path, &raw, HEADER_BYTES)?
    } else {
        Vec::new()
    };
    let bytes: &[u8] = if gzipped { &head } else { &raw };
    if bytes.len() >= 4 {
        let sizeof_hdr = [0, 1, 2, 3].map(|i| bytes[i]);
        if i32::from_le_bytes(sizeof_hdr) == 540 || i32::from_be_bytes(sizeof_hdr) == 540 {
            return Err(Error::format(
                path,
                "NIfTI-2 files are not supported yet; save the image as NIfTI-1",
            ));
        }
    }
    if bytes.len() < HEADER_BYTES {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes, shorter than a NIfTI-1 header ({HEADER_BYTES} bytes)",
                bytes.len()
            ),
        ));
    }
    let header = NiftiHeader::from_reader(bytes).map_err(|source| Error::Nifti {
        path: path.to_path_buf(),
        source,
    })?;
    if header.sizeof_hdr != HEADER_BYTES as i32 {
        return Err(Error::format(
            path,
            format!(
                "not a NIfTI-1 file: sizeof_hdr is {}, expected 348",
                header.sizeof_hdr
            ),
        ));
    }
    match &header.magic {
        b"n+1\0" => {}
        b"ni1\0" => {
            return Err(Error::format(
                path,
                "header/image file pairs (.hdr/.img) are not supported; save it as a single .nii",
            ));
        }
        m => {
            return Err(Error::format(
                path,
                format!(
                    "not a NIfTI-1 file: magic is {:?}, expected \"n+1\"",
                    String::from_utf8_lossy(m)
                ),
            ));
        }
    }
    let dims = header.dim().map_err(|source| Error::Nifti {
        path: path.to_path_buf(),
        source,
    })?;
    let sizes: Vec<usize> = dims.iter().map(|&d| usize::from(d)).collect();
    let voxels = declared_values(path, &sizes)?;
    let shape = [0, 1, 2].map(|d| sizes.get(d).copied().unwrap_or(1));
    let channels: usize = sizes.iter().skip(3).product();
    let datatype = datatype_of(path, &header)?;
    let bitpix = header.bitpix as usize;
    if bitpix != datatype.size() * 8 {
        return Err(Error::format(
            path,
            format!(
                "bitpix {bitpix} disagrees with datatype {} ({} bits)",
                datatype.name(),
                datatype.size() * 8
            ),
        ));
    }
    let offset = header.vox_offset;
    // Extensions beyond 1 GiB are not a header any tool writes.
    if !offset.is_finite() || offset < HEADER_BYTES as f32 || offset > (1u32 << 30) as f32 {
        return Err(Error::format(path, format!("invalid vox_offset {offset}")));
    }
    let offset = offset as usize;
    let expected = voxels * datatype.size();
    let data_bytes;
    let bytes: &[u8] = if gzipped {
        data_bytes = gunzip(path, &raw, offset + expected)?;
        &data_bytes
    } else {
        &raw
    };
    let available = bytes.len().saturating_sub(offset);
    if available != expected {
        let (what, has) = if available < expected {
            ("truncated", available.to_string())
        } else {
            ("too long", "more".to_string())
        };
        return Err(Error::format(
            path,
            format!(
                "{what}: the header's dimensions {:?} of {} need {expected} data bytes after offset {offset}, the file has {has}",
                dims,
                datatype.name()
            ),
        ));
    }
    let mut data = Vec::with_capacity(voxels);
    let big_endian = header.endianness == ::nifti::Endianness::Big;
    datatype.decode(&bytes[offset..], big_endian, &mut data);
    let (slope, inter) = (header.scl_slope, header.scl_inter);
    // The standard: a zero (or non-finite) slope means "no scaling".
    if slope != 0.0 && slope.is_finite() && inter.is_finite() && (slope != 1.0 || inter != 0.0) {
        for v in &mut data {
            *v = *v * slope + inter;
        }
    }
    let affine = best_affine(&header);
    let volume = Volume::new(data, shape, channels, affine)
        .map_err(|e| Error::format(path, format!("unusable geometry: {e}")))?;
    Ok(Image {
        volume,
        info: ImageInfo {
            path: path.to_path_buf(),
            format: Format::Nifti,
            datatype,
            nifti_header: Some(Box::new(header)),
            dicom: None,
        },
    })
}

/// Sets the qform and sform of `h` to `affine` (qform: its nearest rigid
/// part), with spacing in `pixdim`.
fn set_geometry(h: &mut NiftiHeader, affine: &Affine) {
    let ([b, c, d], qfac, spacing) = affine_to_quaternion(affine);
    h.pixdim[0] = qfac as f32;
    for a in 0..3 {
        h.pixdim[a + 1] = spacing[a] as f32;
    }
    h.quatern_b = b as f32;
    h.quatern_c = c as f32;
    h.quatern_d = d as f32;
    let o = affine.origin();
    h.quatern_x = o[0] as f32;
    h.quatern_y = o[1] as f32;
    h.quatern_z = o[2] as f32;
    let row = |r: usize| affine.0[r].map(|v| v as f32);
    h.srow_x = row(0);
    h.srow_y = row(1);
    h.srow_z = row(2);
    // NIFTI_XFORM_SCANNER_ANAT for both, unless the reference said otherwise.
    if h.qform_code <= 0 {
        h.qform_code = 1;
    }
    if h.sform_code <= 0 {
        h.sform_code = 1;
    }
    // mm and seconds
    h.xyzt_units = 2 | 8;
}

/// Writes `volume` as NIfTI-1 (gzipped when the name ends in `.gz`).
///
/// With a NIfTI `reference` whose affine is the volume's, the output keeps
/// the reference's geometry fields bit for bit (qform, sform, codes, units,
/// pixdim), so it overlays the input in ITK-SNAP or 3D Slicer whichever
/// transform they read; otherwise both transforms are set from the volume's
/// affine.
pub fn write(
    path: &Path,
    volume: &Volume,
    datatype: DataType,
    reference: Option<&ImageInfo>,
    overwrite: bool,
) -> Result<()> {
    let mut header = NiftiHeader {
        magic: *b"n+1\0",
        ..NiftiHeader::default()
    };
    let reusable = reference
        .and_then(|r| r.nifti_header.as_deref())
        .filter(|h| best_affine(h).max_abs_diff(volume.world_from_voxel()) < 1e-4);
    match reusable {
        Some(h) => {
            header.pixdim = h.pixdim;
            header.qform_code = h.qform_code;
            header.sform_code = h.sform_code;
            header.quatern_b = h.quatern_b;
            header.quatern_c = h.quatern_c;
            header.quatern_d = h.quatern_d;
            header.quatern_x = h.quatern_x;
            header.quatern_y = h.quatern_y;
            header.quatern_z = h.quatern_z;
            header.srow_x = h.srow_x;
            header.srow_y = h.srow_y;
            header.srow_z = h.srow_z;
            header.xyzt_units = h.xyzt_units;
            header.dim_info = h.dim_info;
        }
        None => {
            header.qform_code = 0;
            header.sform_code = 0;
            set_geometry(&mut header, volume.world_from_voxel());
        }
    }
    header.endianness = ::nifti::Endianness::Little;
    header
        .set_description_str("tonno")
        .map_err(|source| Error::Nifti {
            path: path.to_path_buf(),
            source,
        })?;
    let [nx, ny, nz] = volume.shape();
    let mut dims = vec![nx, ny, nz];
    if volume.channels() > 1 {
        dims.push(volume.channels());
    }
    write_atomically(path, overwrite, |tmp| {
        let options = WriterOptions::new(tmp).reference_header(&header);
        let to_err = |source| Error::Nifti {
            path: path.to_path_buf(),
            source,
        };
        macro_rules! write_as {
            ($t:ty, $conv:expr) => {{
                let values: Vec<$t> = volume.data().iter().map($conv).collect();
                let view = ArrayView::from_shape(IxDyn(&dims).f(), &values)
                    .expect("shape matches the volume's voxel count");
                options
                    .write_nifti_with_type(&view, nifti_type(datatype))
                    .map_err(to_err)
            }};
        }
        match datatype {
            DataType::U8 => write_as!(u8, |&v| v.round() as u8),
            DataType::I8 => write_as!(i8, |&v| v.round() as i8),
            DataType::U16 => write_as!(u16, |&v| v.round() as u16),
            DataType::I16 => write_as!(i16, |&v| v.round() as i16),
            DataType::U32 => write_as!(u32, |&v| v.round() as u32),
            DataType::I32 => write_as!(i32, |&v| v.round() as i32),
            DataType::U64 => write_as!(u64, |&v| v.round() as u64),
            DataType::I64 => write_as!(i64, |&v| v.round() as i64),
            DataType::F32 => write_as!(f32, |&v| v),
            DataType::F64 => write_as!(f64, |&v| v as f64),
        }
    })
}

/// Cosine of the largest angle between the affine's voxel axes, for `info`:
/// 0 for an orthogonal grid.
pub fn max_shear(a: &Affine) -> f64 {
    let cols: Vec<Vec3> = (0..3).map(|c| a.column(c)).collect();
    let mut worst = 0.0f64;
    for i in 0..3 {
        for j in i + 1..3 {
            let c = dot(cols[i], cols[j]) / (norm(cols[i]) * norm(cols[j]));
            worst = worst.max(c.abs());
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation_affine(angles_deg: Vec3, spacing: Vec3, flip_k: bool) -> Affine {
        let [ax, ay, az] = angles_deg.map(f64::to_radians);
        let rx = [
            [1.0, 0.0, 0.0],
            [0.0, ax.cos(), -ax.sin()],
            [0.0, ax.sin(), ax.cos()],
        ];
        let ry = [
            [ay.cos(), 0.0, ay.sin()],
            [0.0, 1.0, 0.0],
            [-ay.sin(), 0.0, ay.cos()],
        ];
        let rz = [
            [az.cos(), -az.sin(), 0.0],
            [az.sin(), az.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let mul = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
            let mut r = [[0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    r[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
                }
            }
            r
        };
        let r = mul(rz, mul(ry, rx));
        let mut cols = [[0.0; 3]; 3];
        for c in 0..3 {
            let s = if c == 2 && flip_k {
                -spacing[c]
            } else {
                spacing[c]
            };
            cols[c] = [r[0][c] * s, r[1][c] * s, r[2][c] * s];
        }
        Affine::from_columns(cols, [12.0, -30.5, 4.25])
    }

    #[test]
    fn quaternion_round_trip_recovers_rigid_affines() {
        for (angles, flip) in [
            ([0.0, 0.0, 0.0], false),
            ([10.0, -20.0, 35.0], false),
            ([170.0, 5.0, -90.0], true),
            ([0.0, 180.0, 0.0], false),
            ([90.0, 90.0, 0.0], true),
        ] {
            let a = rotation_affine(angles, [0.7, 1.3, 3.0], flip);
            let mut h = NiftiHeader::default();
            set_geometry(&mut h, &a);
            let back = qform_affine(&h);
            assert!(
                back.max_abs_diff(&a) < 1e-5,
                "{angles:?} flip={flip}\n{a}\n{back}"
            );
        }
    }

    #[test]
    fn sform_is_preferred_over_qform() {
        let mut h = NiftiHeader::default();
        set_geometry(
            &mut h,
            &Affine::from_diagonal([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]),
        );
        h.srow_x = [3.0, 0.0, 0.0, -5.0];
        assert_eq!(best_affine(&h).0[0], [3.0, 0.0, 0.0, -5.0]);
        h.sform_code = 0;
        assert_eq!(best_affine(&h).0[0], [2.0, 0.0, 0.0, 1.0]);
    }
}
