//! NRRD images (`.nrrd` with attached data, `.nhdr` with a detached data
//! file), as written by 3D Slicer, ITK and pynrrd.
//!
//! Supported: scalar types, `raw` and `gzip` encodings (plus `ascii`), either
//! endianness, `byte skip` and `line skip`, `space directions` and
//! `space origin` in any of the anatomical spaces (LPS is converted to RAS),
//! `spacings` when there are no directions, and one non-spatial axis
//! (a `none` direction: vector or list kinds) read as channels.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{
    DataType, Format, Image, ImageInfo, declared_values, gunzip, read_file, write_atomically,
};
use crate::affine::{Affine, Vec3};
use crate::error::{Error, Result};
use crate::volume::Volume;

fn parse_type(path: &Path, s: &str) -> Result<DataType> {
    let t = match s.trim() {
        "signed char" | "int8" | "int8_t" => DataType::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => DataType::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            DataType::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => DataType::U16,
        "int" | "signed int" | "int32" | "int32_t" => DataType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => DataType::U32,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t" => DataType::I64,
        "ulonglong" | "unsigned long long" | "unsigned long long int" | "uint64" | "uint64_t" => {
            DataType::U64
        }
        "float" => DataType::F32,
        "double" => DataType::F64,
        other => {
            return Err(Error::format(
                path,
                format!("NRRD type {other:?} is not supported"),
            ));
        }
    };
    Ok(t)
}

fn nrrd_type_name(dt: DataType) -> &'static str {
    match dt {
        DataType::U8 => "uint8",
        DataType::I8 => "int8",
        DataType::U16 => "uint16",
        DataType::I16 => "int16",
        DataType::U32 => "uint32",
        DataType::I32 => "int32",
        DataType::U64 => "uint64",
        DataType::I64 => "int64",
        DataType::F32 => "float",
        DataType::F64 => "double",
    }
}

/// Parses `(x,y,z)` into a vector; `none` into `None`.
fn parse_vector(path: &Path, s: &str) -> Result<Option<Vec<f64>>> {
    let s = s.trim();
    if s == "none" {
        return Ok(None);
    }
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| Error::format(path, format!("expected a vector like (1,0,0), got {s:?}")))?;
    inner
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| Error::format(path, format!("bad number {v:?} in vector {s:?}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Splits the `space directions` value into its vectors and `none`s.
fn split_vectors(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for ch in s.chars() {
        match ch {
            '(' => {
                depth += 1;
                cur.push(ch);
            }
            ')' => {
                depth -= 1;
                cur.push(ch);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Sign flips that take a NRRD space's coordinates to RAS.
fn space_to_ras(path: &Path, space: Option<&str>) -> Result<[f64; 3]> {
    Ok(match space.map(str::trim) {
        None => [1.0, 1.0, 1.0],
        Some("right-anterior-superior" | "RAS" | "scanner-xyz" | "3D-right-handed") => {
            [1.0, 1.0, 1.0]
        }
        Some("left-posterior-superior" | "LPS" | "3D-left-handed") => [-1.0, -1.0, 1.0],
        Some("left-anterior-superior" | "LAS") => [-1.0, 1.0, 1.0],
        Some(other) => {
            return Err(Error::format(
                path,
                format!("NRRD space {other:?} is not supported (use RAS, LPS or LAS)"),
            ));
        }
    })
}

struct Header {
    fields: HashMap<String, String>,
    /// Byte offset of the data in the header file (attached data).
    data_start: usize,
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if !bytes.starts_with(b"NRRD000") {
        return Err(Error::format(
            path,
            "not a NRRD file: it does not start with NRRD000x",
        ));
    }
    let mut fields = HashMap::new();
    let mut pos = 0;
    let mut first = true;
    loop {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|e| pos + e)
            .ok_or_else(|| {
                Error::format(
                    path,
                    "truncated: the header has no blank line before the data",
                )
            })?;
        let line = std::str::from_utf8(&bytes[pos..end])
            .map_err(|_| Error::format(path, "the header is not valid text"))?
            .trim_end_matches('\r');
        pos = end + 1;
        if first {
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.contains(":=") {
            continue; // key/value pairs: metadata we do not need
        }
        let (k, v) = line
            .split_once(": ")
            .ok_or_else(|| Error::format(path, format!("malformed header line {line:?}")))?;
        fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        if pos >= bytes.len() {
            // A detached header may end without a blank line.
            break;
        }
    }
    Ok(Header {
        fields,
        data_start: pos,
    })
}

/// Reads a NRRD image into RAS+ world coordinates.
pub fn read(path: &Path) -> Result<Image> {
    let bytes = read_file(path)?;
    let header = parse_header(path, &bytes)?;
    let f = Fields {
        path,
        map: &header.fields,
    };
    let datatype = parse_type(path, f.need("type")?)?;
    let dimension: usize = f
        .need("dimension")?
        .parse()
        .map_err(|_| Error::format(path, "bad dimension field"))?;
    let sizes: Vec<usize> = f
        .need("sizes")?
        .split_whitespace()
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| Error::format(path, format!("bad size {s:?}")))
        })
        .collect::<Result<_>>()?;
    if sizes.len() != dimension || sizes.contains(&0) {
        return Err(Error::format(
            path,
            format!("sizes {sizes:?} disagree with dimension {dimension}"),
        ));
    }
    let voxels = declared_values(path, &sizes)?;
    let grid = Grid::new(&f, &sizes)?;
    let attached = &bytes[header.data_start..];
    let values = read_values(&f, attached, datatype, voxels, &sizes)?;
    let data = match grid.channel_axis {
        Some(axis) if grid.channels > 1 => {
            channel_last(&values, &sizes, &grid.spatial_axes, axis, grid.shape)
        }
        _ => values,
    };
    let volume = Volume::new(data, grid.shape, grid.channels, grid.affine)
        .map_err(|e| Error::format(path, format!("unusable geometry: {e}")))?;
    Ok(Image {
        volume,
        info: ImageInfo {
            path: path.to_path_buf(),
            format: Format::Nrrd,
            datatype,
            nifti_header: None,
            dicom: None,
        },
    })
}

/// A header's fields, with the file they came from for errors.
struct Fields<'a> {
    path: &'a Path,
    map: &'a HashMap<String, String>,
}

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).map(String::as_str)
    }

    fn need(&self, k: &str) -> Result<&str> {
        self.get(k)
            .ok_or_else(|| Error::format(self.path, format!("the header has no {k:?} field")))
    }
}

/// The voxel grid a header describes: spatial axes (2 or 3) and at most
/// one channel axis, in the file's axis order.
struct Grid {
    affine: Affine,
    shape: [usize; 3],
    spatial_axes: Vec<usize>,
    channel_axis: Option<usize>,
    channels: usize,
}

impl Grid {
    fn new(f: &Fields<'_>, sizes: &[usize]) -> Result<Self> {
        let path = f.path;
        let flips = space_to_ras(path, f.get("space"))?;
        let axis_vectors = axis_vectors(f, sizes)?;
        let dimension = sizes.len();
        let spatial_axes: Vec<usize> = (0..dimension)
            .filter(|&a| axis_vectors[a].is_some())
            .collect();
        let other_axes: Vec<usize> = (0..dimension)
            .filter(|&a| axis_vectors[a].is_none())
            .collect();
        if spatial_axes.is_empty() || spatial_axes.len() > 3 || other_axes.len() > 1 {
            return Err(Error::format(
                path,
                format!(
                    "{} spatial and {} non-spatial axes: tonno reads 2 or 3 spatial axes and at most one channel axis",
                    spatial_axes.len(),
                    other_axes.len()
                ),
            ));
        }
        let mut cols = [[0.0; 3]; 3];
        let mut shape = [1usize; 3];
        for (s, &a) in spatial_axes.iter().enumerate() {
            let v = axis_vectors[a].expect("spatial axis has a vector");
            cols[s] = [v[0] * flips[0], v[1] * flips[1], v[2] * flips[2]];
            shape[s] = sizes[a];
        }
        if spatial_axes.len() < 3 {
            // A 2D image: give the missing axis a unit vector orthogonal to the others.
            let [a, b] = [cols[0], cols[1]];
            let n = crate::affine::cross(a, b);
            let l = crate::affine::norm(n);
            cols[2] = if l > 0.0 {
                crate::affine::scale(n, 1.0 / l)
            } else {
                [0.0, 0.0, 1.0]
            };
        }
        let origin = match f.get("space origin") {
            Some(o) => {
                let v = parse_vector(path, o)?
                    .ok_or_else(|| Error::format(path, "space origin is none"))?;
                if v.len() != 3 {
                    return Err(Error::format(path, "space origin is not 3D"));
                }
                [v[0] * flips[0], v[1] * flips[1], v[2] * flips[2]]
            }
            None => [0.0; 3],
        };
        let affine = Affine::from_columns(cols, origin);
        let channels = other_axes.first().map_or(1, |&a| sizes[a]);
        Ok(Self {
            affine,
            shape,
            spatial_axes,
            channel_axis: other_axes.first().copied(),
            channels,
        })
    }
}

/// Each axis's world vector (`None` for a list axis: channels), from
/// `space directions`, or else axis-aligned from `spacings` and `kinds`.
fn axis_vectors(f: &Fields<'_>, sizes: &[usize]) -> Result<Vec<Option<Vec3>>> {
    let (path, dimension) = (f.path, sizes.len());
    let mut axis_vectors: Vec<Option<Vec3>> = Vec::new();
    if let Some(dirs) = f.get("space directions") {
        let parts = split_vectors(dirs);
        if parts.len() != dimension {
            return Err(Error::format(
                path,
                format!(
                    "space directions has {} entries for {dimension} axes",
                    parts.len()
                ),
            ));
        }
        for p in parts {
            axis_vectors.push(match parse_vector(path, &p)? {
                None => None,
                Some(v) if v.len() == 3 => Some([v[0], v[1], v[2]]),
                Some(v) => {
                    return Err(Error::format(
                        path,
                        format!("space direction {v:?} is not 3D; only 3D spaces are supported"),
                    ));
                }
            });
        }
    } else {
        // No world frame: axis-aligned with `spacings` (1 mm when absent).
        let spacings: Vec<f64> = f
            .get("spacings")
            .map(|s| {
                s.split_whitespace()
                    .map(|v| v.parse::<f64>().unwrap_or(f64::NAN))
                    .collect()
            })
            .unwrap_or_else(|| vec![1.0; dimension]);
        let kinds: Vec<String> = f
            .get("kinds")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut spatial = 0;
        for a in 0..dimension {
            let is_list = kinds.get(a).is_some_and(|k| {
                !matches!(k.as_str(), "domain" | "space" | "time" | "???" | "none")
            }) || (dimension == 4 && a == 0 && kinds.is_empty() && sizes[0] <= 16);
            if is_list || spatial == 3 {
                axis_vectors.push(None);
            } else {
                let s = spacings
                    .get(a)
                    .copied()
                    .filter(|v| v.is_finite())
                    .unwrap_or(1.0);
                let mut v = [0.0; 3];
                v[spatial] = s;
                axis_vectors.push(Some(v));
                spatial += 1;
            }
        }
    }
    Ok(axis_vectors)
}

/// The data's bytes and the file they are in: the header's own (attached
/// data) or its detached `data file`, relative to the header.
fn data_bytes(f: &Fields<'_>, attached: &[u8]) -> Result<(Vec<u8>, PathBuf)> {
    let path = f.path;
    Ok(match f.get("data file").or(f.get("datafile")) {
        Some(name) => {
            if name.starts_with("LIST") || name.split_whitespace().count() > 1 {
                return Err(Error::format(path, "multi-file NRRD data is not supported"));
            }
            let p = if Path::new(name).is_absolute() {
                PathBuf::from(name)
            } else {
                path.parent().unwrap_or(Path::new(".")).join(name)
            };
            if p.exists() && !p.is_file() {
                return Err(Error::format(
                    path,
                    format!("its data file {} is not a regular file", p.display()),
                ));
            }
            let b = read_file(&p)?;
            (b, p)
        }
        None => (attached.to_vec(), path.to_path_buf()),
    })
}

/// The data (attached after the header, or in the detached data file),
/// decoded to `voxels` values in file order: line and byte skips, raw,
/// gzip or ascii encoding, endianness. Never allocates more than the bytes
/// there (or, for gzip, what the header declares) hold.
fn read_values(
    f: &Fields<'_>,
    attached: &[u8],
    datatype: DataType,
    voxels: usize,
    sizes: &[usize],
) -> Result<Vec<f32>> {
    let path = f.path;
    let (data_bytes, data_path) = data_bytes(f, attached)?;
    let encoding = f.get("encoding").unwrap_or("raw");
    let line_skip: usize = f
        .get("line skip")
        .or(f.get("lineskip"))
        .map_or(Ok(0), |s| {
            s.parse().map_err(|_| Error::format(path, "bad line skip"))
        })?;
    let mut start = 0;
    for _ in 0..line_skip {
        start += data_bytes[start..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::format(&data_path, "line skip goes past the end of the data"))?
            + 1;
    }
    let expected = voxels * datatype.size();
    let byte_skip: i64 = f
        .get("byte skip")
        .or(f.get("byteskip"))
        .map_or(Ok(0), |s| {
            s.parse().map_err(|_| Error::format(path, "bad byte skip"))
        })?;
    if byte_skip < -1 || (byte_skip == -1 && encoding != "raw") {
        return Err(Error::format(
            path,
            format!(
                "byte skip {byte_skip} is not valid for {encoding} data (-1 is for raw data only)"
            ),
        ));
    }
    let mut raw = match encoding {
        "raw" => data_bytes[start..].to_vec(),
        "gzip" | "gz" => {
            // Decompress no further than the header says the data go.
            let limit = usize::try_from(byte_skip)
                .unwrap_or(0)
                .saturating_add(expected);
            gunzip(&data_path, &data_bytes[start..], limit)?
        }
        "ascii" | "text" | "txt" => Vec::new(),
        other => {
            return Err(Error::format(
                path,
                format!("NRRD encoding {other:?} is not supported (use raw or gzip)"),
            ));
        }
    };
    if matches!(encoding, "ascii" | "text" | "txt") {
        return ascii_values(&data_path, &data_bytes[start..], voxels, sizes);
    }
    let big = match f.get("endian") {
        Some("big") => true,
        Some("little") | None => false,
        Some(e) => return Err(Error::format(path, format!("bad endian {e:?}"))),
    };
    if byte_skip == -1 {
        // Data is the last `expected` bytes.
        if raw.len() < expected {
            return Err(Error::format(&data_path, "truncated data"));
        }
        raw.drain(..raw.len() - expected);
    } else if byte_skip > 0 {
        let skip = byte_skip as usize;
        if skip > raw.len() {
            return Err(Error::format(
                &data_path,
                "byte skip goes past the end of the data",
            ));
        }
        raw.drain(..skip);
    }
    if raw.len() != expected {
        let what = if raw.len() < expected {
            "truncated"
        } else {
            "too long"
        };
        return Err(Error::format(
            &data_path,
            format!(
                "{what}: sizes {sizes:?} of {} need {expected} data bytes, found {}",
                datatype.name(),
                raw.len()
            ),
        ));
    }
    // Sized only now that the byte count has been checked: never from the
    // header's sizes alone.
    let mut values = Vec::with_capacity(voxels);
    datatype.decode(&raw, big, &mut values);
    Ok(values)
}

/// Ascii data: numbers separated by white space or commas, exactly
/// `voxels` of them (grown as found, never reserved from the header).
fn ascii_values(
    data_path: &Path,
    bytes: &[u8],
    voxels: usize,
    sizes: &[usize],
) -> Result<Vec<f32>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::format(data_path, "ascii data is not valid text"))?;
    let mut values = Vec::new();
    for tok in text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
    {
        values.push(
            tok.parse::<f64>()
                .map_err(|_| Error::format(data_path, format!("bad number {tok:?}")))?
                as f32,
        );
    }
    if values.len() != voxels {
        return Err(Error::format(
            data_path,
            format!(
                "expected {voxels} values for sizes {sizes:?}, found {}",
                values.len()
            ),
        ));
    }
    Ok(values)
}

/// Values of a file with a channel axis, reordered to channel-last with the
/// spatial axes in file order.
fn channel_last(
    values: &[f32],
    sizes: &[usize],
    spatial_axes: &[usize],
    ch_axis: usize,
    shape: [usize; 3],
) -> Vec<f32> {
    let dimension = sizes.len();
    let mut strides = vec![0usize; dimension];
    let mut s = 1;
    for a in 0..dimension {
        strides[a] = s;
        s *= sizes[a];
    }
    let n: usize = shape.iter().product();
    let channels = sizes[ch_axis];
    let mut out = vec![0.0f32; n * channels];
    let sp: Vec<(usize, usize)> = spatial_axes
        .iter()
        .map(|&a| (sizes[a], strides[a]))
        .collect();
    for c in 0..channels {
        for idx in 0..n {
            let mut rem = idx;
            let mut src = c * strides[ch_axis];
            for &(size, stride) in &sp {
                src += (rem % size) * stride;
                rem /= size;
            }
            out[c * n + idx] = values[src];
        }
    }
    out
}

/// Writes a volume as an attached NRRD in LPS space (as 3D Slicer writes
/// them), gzip-encoded. Channels, if any, go on the first (fastest) axis
/// with kind `vector`.
pub fn write(path: &Path, volume: &Volume, datatype: DataType, overwrite: bool) -> Result<()> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("nhdr"))
    {
        return Err(Error::invalid(
            "output path",
            format!(
                "{}: tonno writes attached .nrrd files, not detached .nhdr",
                path.display()
            ),
        ));
    }
    let a = volume.world_from_voxel().lps_to_ras(); // the same flip maps RAS to LPS
    let [nx, ny, nz] = volume.shape();
    let ch = volume.channels();
    let vec = |v: Vec3| format!("({},{},{})", v[0], v[1], v[2]);
    let dirs = (0..3)
        .map(|c| vec(a.column(c)))
        .collect::<Vec<_>>()
        .join(" ");
    let mut head = String::from("NRRD0004\n# written by tonno\n");
    head += &format!("type: {}\n", nrrd_type_name(datatype));
    if ch > 1 {
        head += &format!(
            "dimension: 4\nspace: left-posterior-superior\nsizes: {ch} {nx} {ny} {nz}\nspace directions: none {dirs}\nkinds: vector domain domain domain\n"
        );
    } else {
        head += &format!(
            "dimension: 3\nspace: left-posterior-superior\nsizes: {nx} {ny} {nz}\nspace directions: {dirs}\nkinds: domain domain domain\n"
        );
    }
    head += &format!(
        "endian: little\nencoding: gzip\nspace origin: {}\n\n",
        vec(a.origin())
    );
    let n = volume.voxels();
    let interleaved: Vec<f32> = if ch > 1 {
        let d = volume.data();
        (0..n * ch).map(|i| d[(i % ch) * n + i / ch]).collect()
    } else {
        volume.data().to_vec()
    };
    let mut payload = Vec::with_capacity(n * ch * datatype.size());
    datatype.encode_le(&interleaved, &mut payload);
    write_atomically(path, overwrite, |tmp| {
        let io = |source| Error::Write {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::create(tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(head.as_bytes()).map_err(io)?;
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        gz.write_all(&payload).map_err(io)?;
        gz.finish().map_err(io)?.flush().map_err(io)
    })
}
