//! Fuzzing every reader of tonno-core with structure-aware mutants of valid
//! files (see `tonno_core::fuzz`): NIfTI (.nii, .nii.gz), NRRD (attached
//! raw, gzip and ascii, detached .nhdr with its data file), DICOM (an
//! Enhanced multi-frame file, a series folder), labels CSV and
//! dataset.json. No input may panic, hang, allocate more than 256 MiB in
//! one block or fail with an error that names no file.
//!
//! CI runs 20,000 inputs per format; a longer run:
//! `TONNO_FUZZ_INPUTS=200000 cargo test --release -p tonno-core --test fuzz`
//! (`TONNO_FUZZ_SEED` for another draw, `TONNO_FUZZ_OUT=DIR` to keep
//! the findings' files).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use tonno_core::affine::Affine;
use tonno_core::fuzz::{
    self, AllocProbe, Config, Field, FieldType, Kind, NIFTI1_FIELDS, SeedFile, Target, error_chain,
};
use tonno_core::io::dataset::{Dataset, LabelSource, read_labels_csv};
use tonno_core::io::dicom::{SeriesOptions, write_series};
use tonno_core::io::{DataType, read_image, write_image};
use tonno_core::volume::Volume;

/// The largest single allocation of the current thread, so that a reader
/// that reserves what a header declares is caught before the machine runs
/// out of memory. Beyond 1 GiB an allocation fails outright (the process
/// aborts, and the run's seed and `TONNO_FUZZ_INPUTS` reproduce it).
struct Probe;

const SOFT_LIMIT: usize = 256 << 20;
const HARD_LIMIT: usize = 1 << 30;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// probe only records sizes and refuses requests beyond HARD_LIMIT.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if layout.size() > HARD_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if layout.size() > HARD_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        if new_size > HARD_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

const PROBE_HOOKS: AllocProbe = AllocProbe {
    reset: || PEAK.with(|p| p.set(0)),
    peak: || PEAK.with(Cell::get),
    limit: SOFT_LIMIT,
};

const INPUTS: usize = 20_000;

fn fuzz(name: &str, seeds: Vec<Vec<SeedFile>>, target: Target) {
    let scratch = tempfile::tempdir().unwrap();
    let mut config = Config::from_env(INPUTS, scratch.path());
    config.alloc = Some(PROBE_HOOKS);
    fuzz::assert_clean(name, &fuzz::run(&seeds, target, &config));
}

fn image_target(path: &Path) -> Result<(), String> {
    read_image(path).map(drop).map_err(|e| error_chain(&e))
}

fn tiny(channels: usize) -> Volume {
    let a = Affine::from_columns(
        [[1.5, 0.1, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.5]],
        [-3.0, 4.0, 5.0],
    );
    let n = 5 * 4 * 3;
    let data = (0..n * channels).map(|i| (i % 17) as f32).collect();
    Volume::new(data, [5, 4, 3], channels, a).unwrap()
}

fn written(name: &str, volume: &Volume, dt: DataType) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    write_image(&p, volume, dt, None, false).unwrap();
    std::fs::read(p).unwrap()
}

const NRRD_LINES: &[&str] = &[
    "sizes: 100000 100000 100000",
    "sizes: 18446744073709551615 2 2",
    "sizes: 0 4 3",
    "dimension: 4",
    "dimension: 2",
    "dimension: 18446744073709551615",
    "type: double",
    "type: int64",
    "type: block",
    "encoding: gzip",
    "encoding: raw",
    "encoding: ascii",
    "encoding: bzip2",
    "endian: big",
    "endian: middle",
    "byte skip: -1",
    "byte skip: -2",
    "byte skip: 9223372036854775807",
    "line skip: 99999999999",
    "data file: LIST",
    "data file: /dev/zero",
    "data file: missing.raw",
    "data file: ../../../../nonexistent",
    "space directions: none (1,0,0) (0,1,0)",
    "space directions: (1,0) (0,1) (1,1)",
    "space directions: (nan,0,0) (0,1,0) (0,0,1)",
    "space directions: (0,0,0) (0,0,0) (0,0,0)",
    "space origin: (1e308,1e308,1e308)",
    "space origin: none",
    "space: scanner-xyz",
    "space: left-posterior-superior-time",
    "kinds: vector domain domain domain",
    "kinds: RGB-color domain domain",
    "spacings: nan 1 1",
    "spacings: 0 0 0",
    "key:=value",
    "#",
    "",
];

const NUMBER_TOKENS: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "1e-320",
    "",
    " ",
    "(",
    "()",
    "(,,)",
    "none",
    "\u{0}",
    "é",
];

fn nrrd_text(header: &str, data: &[u8]) -> Vec<u8> {
    [header.as_bytes(), b"\n", data].concat()
}

fn nrrd_seeds() -> Vec<Vec<SeedFile>> {
    let kind = || Kind::TextThenData {
        lines: NRRD_LINES,
        tokens: NUMBER_TOKENS,
    };
    let v = tiny(1);
    let raw: Vec<u8> = v
        .data()
        .iter()
        .flat_map(|&x| (x as i16).to_le_bytes())
        .collect();
    let ascii: String = v.data().iter().map(|x| format!("{x} ")).collect();
    let head = |ty: &str, enc: &str, extra: &str| {
        format!(
            "NRRD0004\ntype: {ty}\ndimension: 3\nspace: left-posterior-superior\nsizes: 5 4 3\n\
             space directions: (1.5,0,0) (0,2,0) (0,0,2.5)\nspace origin: (1,2,3)\n{extra}encoding: {enc}\n"
        )
    };
    let one = |name: &str, bytes: Vec<u8>| {
        vec![SeedFile {
            name: name.into(),
            bytes,
            kind: kind(),
        }]
    };
    let nhdr = "NRRD0004\ntype: short\ndimension: 3\nsizes: 5 4 3\nspacings: 1 2 3\n\
                endian: little\nencoding: raw\ndata file: d.raw\n";
    vec![
        one("gzip.nrrd", written("gzip.nrrd", &v, DataType::F32)),
        one(
            "vector.nrrd",
            written("vector.nrrd", &tiny(3), DataType::U8),
        ),
        one(
            "raw.nrrd",
            nrrd_text(&head("short", "raw", "endian: little\n"), &raw),
        ),
        one(
            "ascii.nrrd",
            nrrd_text(&head("float", "ascii", ""), ascii.as_bytes()),
        ),
        one(
            "skip.nrrd",
            nrrd_text(
                &head("short", "raw", "endian: little\nbyte skip: -1\n"),
                &[&[0u8; 7][..], &raw].concat(),
            ),
        ),
        vec![
            SeedFile {
                name: "d.nhdr".into(),
                bytes: nhdr.as_bytes().to_vec(),
                kind: Kind::Text {
                    lines: NRRD_LINES,
                    tokens: NUMBER_TOKENS,
                },
            },
            SeedFile {
                name: "d.raw".into(),
                bytes: raw.clone(),
                kind: Kind::Binary { fields: &[] },
            },
        ],
    ]
}

fn nifti_seeds(gz: bool) -> Vec<Vec<SeedFile>> {
    let types = [DataType::U8, DataType::I16, DataType::F32, DataType::F64];
    let mut seeds = Vec::new();
    for (i, dt) in types.into_iter().enumerate() {
        let v = tiny(if i == 1 { 2 } else { 1 });
        let name = format!("s{i}.nii{}", if gz { ".gz" } else { "" });
        let bytes = written(&name, &v, dt);
        let kind = Kind::Binary {
            fields: NIFTI1_FIELDS,
        };
        seeds.push(vec![SeedFile {
            name,
            bytes,
            kind: if gz { Kind::Gzip(Box::new(kind)) } else { kind },
        }]);
    }
    seeds
}

#[test]
fn nifti_readers_survive_mutants() {
    fuzz("nifti", nifti_seeds(false), image_target);
}

#[test]
fn gzipped_nifti_readers_survive_mutants() {
    fuzz("nifti-gz", nifti_seeds(true), image_target);
}

#[test]
fn nrrd_readers_survive_mutants() {
    fuzz("nrrd", nrrd_seeds(), image_target);
}

/// The typed fields of a DICOM file (explicit VR little endian) that
/// readers trust: the file meta group's length, the image's sizes and bit
/// depths (`US` values), and the lengths of its sequences and pixel data.
fn dicom_fields(bytes: &[u8]) -> &'static [Field] {
    let tag = |g: u16, e: u16| [g.to_le_bytes(), e.to_le_bytes()].concat();
    let mut fields = Vec::new();
    let mut at = |g, e, delta, ty| {
        let t = tag(g, e);
        let mut from = 132;
        while let Some(p) = bytes[from..].windows(4).position(|w| w == t) {
            fields.push(Field {
                offset: from + p + delta,
                ty,
                count: 1,
            });
            from += p + 4;
        }
    };
    at(0x0002, 0x0000, 8, FieldType::I32);
    for e in [0x0002, 0x0010, 0x0011, 0x0100, 0x0101, 0x0102, 0x0103] {
        // Value of a US element: tag, VR, 2-byte length, value.
        at(0x0028, e, 8, FieldType::I16);
        at(0x0028, e, 6, FieldType::I16);
    }
    at(0x0028, 0x0008, 8, FieldType::Bytes);
    // Long-form elements: tag, VR, 2 reserved bytes, 4-byte length.
    at(0x5200, 0x9229, 8, FieldType::I32);
    at(0x5200, 0x9230, 8, FieldType::I32);
    at(0x0020, 0x9113, 8, FieldType::I32);
    at(0x7fe0, 0x0010, 8, FieldType::I32);
    at(0x0020, 0x0032, 6, FieldType::I16);
    at(0x0020, 0x0037, 6, FieldType::I16);
    Box::leak(fields.into_boxed_slice())
}

fn dicom_seeds(multi_frame: bool) -> Vec<Vec<SeedFile>> {
    let dir = tempfile::tempdir().unwrap();
    let options = SeriesOptions {
        multi_frame,
        rescale_slope: 0.5,
        rescale_intercept: -3.0,
        ..SeriesOptions::default()
    };
    // Rows and columns must be orthogonal; the slice axis tilts.
    let a = Affine::from_columns(
        [[1.5, 0.0, 0.0], [0.0, 2.0, 0.0], [0.3, 0.0, 2.5]],
        [-3.0, 4.0, 5.0],
    );
    let v = Volume::from_fn([5, 4, 3], a, |i, j, k| ((i + 3 * j + 7 * k) % 17) as f32).unwrap();
    write_series(dir.path(), &v, &options, false).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let files: Vec<SeedFile> = names
        .iter()
        .map(|n| {
            let bytes = std::fs::read(dir.path().join(n)).unwrap();
            SeedFile {
                name: format!("series/{n}"),
                kind: Kind::Binary {
                    fields: dicom_fields(&bytes),
                },
                bytes,
            }
        })
        .collect();
    vec![files]
}

/// A series is read through its folder: the first file's parent.
fn dicom_series_target(path: &Path) -> Result<(), String> {
    image_target(path.parent().unwrap())
}

#[test]
fn dicom_multi_frame_readers_survive_mutants() {
    fuzz("dicom-multi-frame", dicom_seeds(true), image_target);
}

#[test]
fn dicom_series_readers_survive_mutants() {
    fuzz("dicom-series", dicom_seeds(false), dicom_series_target);
}

const CSV_LINES: &[&str] = &[
    "case,label",
    "a,2",
    "a,",
    ",1",
    "a,1,extra",
    "\"a,1",
    "b,yes",
    "c,0.5",
    "a,1",
    "\u{feff}case,label",
    "case;label",
    "x",
];

fn labels_target(path: &Path) -> Result<(), String> {
    read_labels_csv(path).map(drop).map_err(|e| error_chain(&e))
}

#[test]
fn labels_csv_reader_survives_mutants() {
    let kind = || Kind::Text {
        lines: CSV_LINES,
        tokens: NUMBER_TOKENS,
    };
    let seeds = vec![
        vec![SeedFile {
            name: "labels.csv".into(),
            bytes: b"case,label\na,1\nb,0\nc,1\n".to_vec(),
            kind: kind(),
        }],
        vec![SeedFile {
            name: "labels.csv".into(),
            bytes: b"case,label,subject\r\na,1,s1\r\nb,0,s2\r\n".to_vec(),
            kind: kind(),
        }],
    ];
    fuzz("labels-csv", seeds, labels_target);
}

const JSON_LINES: &[&str] = &[
    "\"training\": [],",
    "\"training\": null,",
    "\"training\": [{\"image\": 3}],",
    "\"training\": [{\"label\": \"./labelsTr/a.nii.gz\"}],",
    "{\"image\": \"/etc/passwd\", \"label\": \"../x.nii.gz\"},",
    "{\"image\": \"./imagesTr/a.nii.gz\"},",
    "\"modality\": {\"0\": \"T1\", \"x\": 2},",
    "\"test\": [\"./imagesTs/missing.nii.gz\"],",
    "\"numTraining\": -1,",
    "[",
    "}",
];

const JSON_TOKENS: &[&str] = &[
    "null",
    "[]",
    "{}",
    "\"\"",
    "\"./imagesTr/a.nii.gz\"",
    "\"./imagesTr/\"",
    "\"/\"",
    "1e999",
    "-1",
    "\"\u{0}\"",
];

fn dataset_target(path: &Path) -> Result<(), String> {
    let root = path.parent().expect("dataset.json sits in a folder");
    Dataset::open(root, &LabelSource::Default)
        .map(drop)
        .map_err(|e| error_chain(&e))
}

#[test]
fn dataset_json_reader_survives_mutants() {
    let image = written("a.nii.gz", &tiny(1), DataType::F32);
    let mask = written("a.nii.gz", &tiny(1), DataType::U8);
    let json = r#"{
"name": "fuzz",
"modality": {"0": "MRI"},
"training": [
{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"},
{"image": "./imagesTr/b.nii.gz", "label": "./labelsTr/b.nii.gz"}
],
"test": ["./imagesTs/c.nii.gz"]
}
"#;
    let fixed = |name: &str, bytes: &Vec<u8>| SeedFile {
        name: name.into(),
        bytes: bytes.clone(),
        kind: Kind::Fixed,
    };
    let seed = vec![
        SeedFile {
            name: "dataset.json".into(),
            bytes: json.as_bytes().to_vec(),
            kind: Kind::Text {
                lines: JSON_LINES,
                tokens: JSON_TOKENS,
            },
        },
        SeedFile {
            name: "labels.csv".into(),
            bytes: b"case,label\na,1\nb,0\n".to_vec(),
            kind: Kind::Text {
                lines: CSV_LINES,
                tokens: NUMBER_TOKENS,
            },
        },
        fixed("imagesTr/a.nii.gz", &image),
        fixed("imagesTr/b.nii.gz", &image),
        fixed("imagesTs/c.nii.gz", &image),
        fixed("labelsTr/a.nii.gz", &mask),
        fixed("labelsTr/b.nii.gz", &mask),
    ];
    fuzz("dataset-json", vec![seed], dataset_target);
}

/// The finding that started this harness: a 100-byte NRRD declaring 10^15
/// voxels made the reader reserve them (the process aborted).
#[test]
fn a_nrrd_declaring_more_voxels_than_it_holds_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    for (name, enc) in [
        ("raw.nrrd", "raw"),
        ("text.nrrd", "ascii"),
        ("gz.nrrd", "gzip"),
    ] {
        let p = dir.path().join(name);
        let data: Vec<u8> = if enc == "gzip" {
            fuzz::gzip(&[0u8; 64])
        } else {
            b"1 2 3 4".to_vec()
        };
        let head = format!(
            "NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\nencoding: {enc}\n\n"
        );
        std::fs::write(&p, nrrd_text(&head, &data)).unwrap();
        PEAK.with(|c| c.set(0));
        let e = error_chain(&read_image(&p).unwrap_err());
        let peak = PEAK.with(Cell::get);
        assert!(e.contains(name) && e.contains("100000"), "{e}");
        assert!(peak < 1 << 20, "{name}: allocated {peak} bytes");
    }
}

/// A gzip bomb: a NIfTI whose header declares 2^30 voxels and whose data
/// decompress to 1 GiB of zeros is refused by the voxel limit, and one
/// whose data run past what the header declares is cut off there.
#[test]
fn gzipped_nifti_is_decompressed_no_further_than_its_header_declares() {
    let dir = tempfile::tempdir().unwrap();
    let mut nii = written("x.nii", &tiny(1), DataType::U8);
    nii.extend(std::iter::repeat_n(0u8, 8 << 20));
    let p = dir.path().join("long.nii.gz");
    std::fs::write(&p, fuzz::gzip(&nii)).unwrap();
    PEAK.with(|c| c.set(0));
    let e = error_chain(&read_image(&p).unwrap_err());
    let peak = PEAK.with(Cell::get);
    assert!(e.contains("long.nii.gz") && e.contains("too long"), "{e}");
    assert!(
        peak < 1 << 20,
        "allocated {peak} bytes for a 60-voxel image"
    );

    // dim = [3, 32767, 32767, 32767]: 3.5e13 voxels.
    let mut huge = written("y.nii", &tiny(1), DataType::U8);
    for (i, d) in [3i16, 32767, 32767, 32767].iter().enumerate() {
        huge[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    let p = dir.path().join("huge.nii.gz");
    std::fs::write(&p, fuzz::gzip(&huge)).unwrap();
    let e = error_chain(&read_image(&p).unwrap_err());
    assert!(
        e.contains("huge.nii.gz") && e.contains("values tonno reads"),
        "{e}"
    );
}
