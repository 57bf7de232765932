//! DICOM end to end through the `tonno` binary: a series segmented onto its
//! own grid (the heatmap's peak at the lesion's world position, computed
//! from the files' attributes), series chosen and refused with clear errors,
//! and, when python3 has pydicom and dcm2niix is installed (CI requires
//! them), series written by pydicom read as dcm2niix reads them, and the
//! DICOM files pydicom ships read as pydicom reads them.

mod common;

use std::path::Path;

use common::tonno;
use tonno_core::affine::{Affine, Vec3, add, cross, scale};
use tonno_core::io::dicom::{SeriesOptions, write_series};
use tonno_core::io::read_image;
use tonno_core::volume::Volume;

/// A 24^3 oblique CT-like grid (rows and columns rotated 25 degrees about
/// z, then 15 about the row axis) with a bright ball at voxel (15, 8, 11).
fn lesion_series(dir: &Path, tilt: f64) -> (Volume, Vec3) {
    let (a, b) = (25f64.to_radians(), 15f64.to_radians());
    let r: Vec3 = [a.cos(), a.sin(), 0.0];
    let c0: Vec3 = [-a.sin(), a.cos(), 0.0];
    let c = add(scale(c0, b.cos()), scale([0.0, 0.0, 1.0], b.sin()));
    let n = cross(r, c);
    let affine = Affine::from_columns(
        [
            scale(r, 4.0),
            scale(c, 4.5),
            add(scale(n, 5.0), scale(r, tilt)),
        ],
        [-40.0, 60.0, -20.0],
    );
    let centre = [15.0, 8.0, 11.0];
    let v = Volume::from_fn([24, 24, 24], affine, |i, j, k| {
        let d2 = (i as f64 - centre[0]).powi(2)
            + (j as f64 - centre[1]).powi(2)
            + (k as f64 - centre[2]).powi(2);
        let body = 100.0 * ((i as f64 - 11.5).abs() < 10.0) as u8 as f64;
        (body + if d2 <= 9.0 { 900.0 } else { 0.0 }) as f32
    })
    .unwrap();
    let options = SeriesOptions {
        modality: "CT".into(),
        rescale_slope: 1.0,
        rescale_intercept: -1024.0,
        ..SeriesOptions::default()
    };
    write_series(dir, &v, &options, false).unwrap();
    (v.clone(), v.voxel_to_world(centre))
}

fn peak_world(v: &Volume) -> Vec3 {
    let [nx, ny, _] = v.shape();
    let (idx, _) =
        v.data().iter().enumerate().fold(
            (0, f32::MIN),
            |best, (i, &x)| if x > best.1 { (i, x) } else { best },
        );
    let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
    v.voxel_to_world([i as f64, j as f64, k as f64])
}

fn dist(a: Vec3, b: Vec3) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

#[test]
fn a_dicom_series_is_segmented_onto_its_own_grid_with_the_peak_on_the_lesion() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (name, tilt) in [("axial", 0.0), ("tilted", 1.5)] {
        let (_, lesion) = lesion_series(&d.join(name), tilt);
        let info = tonno(d, &["info", name, "--json"]).json();
        assert_eq!(info["format"], "dicom");
        assert_eq!(info["dicom"]["slices"], 24);
        assert_eq!(info["dicom"]["modality"], "CT");
        let tilted = info["dicom"]["gantry_tilt_deg"].as_f64().unwrap();
        assert_eq!(tilted > 0.0, tilt > 0.0, "{name}: tilt {tilted}");
        let text = tonno(d, &["info", name]).ok();
        assert!(text.contains("series       2.25.1234567.1 (CT"), "{text}");
        tonno(
            d,
            &[
                "segment",
                "--encoder",
                "sum",
                "--input",
                name,
                "--out",
                "seg",
                "--directions",
                "48",
                "--slices",
                "48",
            ],
        )
        .ok();
        let series = read_image(&d.join(name)).unwrap().volume;
        let heat = read_image(&d.join(format!("seg/{name}_tonno.nii.gz")))
            .unwrap()
            .volume;
        assert_eq!(heat.shape(), series.shape());
        assert!(
            heat.world_from_voxel()
                .max_abs_diff(series.world_from_voxel())
                < 1e-3,
            "{name}: the heatmap is on the series' grid"
        );
        // The reconstruction's peak is the lesion, at its world position
        // (within one voxel, 5 mm: the reconstruction is band-limited).
        let got = peak_world(&heat);
        assert!(
            dist(got, lesion) <= 5.0,
            "{name}: peak {got:?}, lesion {lesion:?}"
        );
    }
    // A folder of series folders: one case each, named by folder.
    std::fs::create_dir(d.join("cases")).unwrap();
    for name in ["axial", "tilted"] {
        std::fs::rename(d.join(name), d.join("cases").join(name)).unwrap();
    }
    tonno(
        d,
        &[
            "segment",
            "--encoder",
            "sum",
            "--input",
            "cases",
            "--out",
            "all",
            "--directions",
            "16",
            "--slices",
            "16",
        ],
    )
    .ok();
    for name in ["axial", "tilted"] {
        assert!(
            d.join(format!("all/{name}_tonno.nii.gz")).is_file(),
            "{name}"
        );
    }
}

#[test]
fn mixed_series_and_undecodable_files_fail_naming_the_file_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let v = Volume::from_fn([4, 4, 5], Affine::identity(), |i, j, k| (i + j + k) as f32).unwrap();
    let second = SeriesOptions {
        uid_root: "2.25.42".into(),
        ..SeriesOptions::default()
    };
    write_series(&d.join("a"), &v, &SeriesOptions::default(), false).unwrap();
    write_series(&d.join("b"), &v, &second, false).unwrap();
    std::fs::create_dir(d.join("mixed")).unwrap();
    for (src, p) in [("a", "a"), ("b", "b")] {
        for e in std::fs::read_dir(d.join(src)).unwrap() {
            let f = e.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&f, d.join("mixed").join(format!("{p}{name}"))).unwrap();
        }
    }
    let run = tonno(d, &["info", "mixed"]);
    assert_eq!(run.out.status.code(), Some(2));
    run.fails_with(&[
        "mixed",
        "holds 2 series",
        "--series",
        "2.25.42.1",
        "2.25.1234567.1",
    ]);
    let info = tonno(d, &["info", "mixed", "--series", "2.25.42.1", "--json"]).json();
    assert_eq!(info["dicom"]["series_uid"], "2.25.42.1");
    tonno(
        d,
        &[
            "segment",
            "--encoder",
            "sum",
            "--input",
            "mixed",
            "--out",
            "seg",
            "--series",
            "2.25.42.1",
            "--directions",
            "16",
            "--slices",
            "16",
        ],
    )
    .ok();
    assert!(d.join("seg/mixed_tonno.nii.gz").is_file());
    tonno(
        d,
        &[
            "radon",
            "--input",
            "mixed",
            "--out",
            "r.nii.gz",
            "--directions",
            "16",
        ],
    )
    .fails_with(&["holds 2 series"]);
    std::fs::write(d.join("a/slice_0002.dcm"), b"not dicom at all").unwrap();
    let bytes = std::fs::read(d.join("b/slice_0002.dcm")).unwrap();
    std::fs::write(d.join("b/slice_0002.dcm"), &bytes[..150]).unwrap();
    let run = tonno(d, &["info", "b"]);
    assert_eq!(run.out.status.code(), Some(2));
    run.fails_with(&["slice_0002.dcm", "not a readable DICOM file"]);
    // A file without the DICM magic is not DICOM and is skipped: the
    // series then misses a slice, and says so.
    tonno(d, &["info", "a"]).fails_with(&[
        "irregular slice spacing",
        "slice_0001.dcm",
        "slice_0003.dcm",
    ]);
}

/// A Python snippet with pydicom, nibabel and dcm2niix at hand.
fn python_dicom(script: &str, dir: &Path) -> Option<String> {
    common::python_with(
        "pydicom, nibabel, numpy",
        &["dcm2niix"],
        "python3 with pydicom and nibabel, or dcm2niix,",
        script,
        dir,
    )
}

/// Writes, with pydicom, an oblique MR series (slices named out of order),
/// a CT series with rescale and signed values, and an Enhanced MR file of
/// the oblique volume; converts each with dcm2niix; prints the world
/// position (RAS, from the files' own attributes) and modality value of
/// some voxels, as JSON.
const WRITE_SERIES: &str = r#"
import json, os, subprocess
import numpy as np, pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

nx, ny, nz = 9, 7, 6
a, b = np.radians(30), np.radians(12)
row = np.array([np.cos(a), np.sin(a), 0.0])
col = np.array([-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
normal = np.cross(row, col)
dr, dc, dz = 1.1, 0.7, 3.0
origin = np.array([-80.5, 20.25, 33.0])
i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
stored = (i * 5 + j * 40 - k * 300 + 11).astype(np.int16)  # [i, j, k]

def base(sop_class, modality, series_uid):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "2.25.7"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "2.25.8"
    ds.Modality = modality
    ds.PatientName = "pydicom^test"
    ds.PatientID = "x"
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    return ds

def slice_pixels(kk):
    return np.ascontiguousarray(stored[:, :, kk].T)  # (rows, columns) = (j, i)

def write_series(folder, modality, sop_class, slope, intercept):
    os.makedirs(folder)
    uid = generate_uid()
    for kk in range(nz):
        ds = base(sop_class, modality, uid)
        ds.InstanceNumber = kk + 1
        ds.ImagePositionPatient = [float(x) for x in origin + kk * dz * normal]
        ds.ImageOrientationPatient = [float(x) for x in np.concatenate([row, col])]
        ds.PixelSpacing = [dr, dc]
        ds.SliceThickness = dz
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = slice_pixels(kk).tobytes()
        # Names in reverse slice order: position, not name, orders slices.
        ds.save_as(os.path.join(folder, f"IM{nz - kk:04d}"), enforce_file_format=True)

def write_enhanced(path):
    ds = base("1.2.840.10008.5.1.4.1.1.4.1", "MR", generate_uid())
    ds.NumberOfFrames = nz
    shared = Dataset()
    po, pm, pvt = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = [float(x) for x in np.concatenate([row, col])]
    pm.PixelSpacing = [dr, dc]
    pm.SliceThickness = dz
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 2.0, -5.0, "US"
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    order = [3, 0, 5, 1, 4, 2]  # frames stored out of slice order
    for kk in order:
        f, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [float(x) for x in origin + kk * dz * normal]
        f.PlanePositionSequence = Sequence([pp])
        frames.append(f)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = b"".join(slice_pixels(kk).tobytes() for kk in order)
    os.makedirs(os.path.dirname(path))
    ds.save_as(path, enforce_file_format=True)

write_series("mr", "MR", "1.2.840.10008.5.1.4.1.1.4", 1.0, 0.0)
write_series("ct", "CT", "1.2.840.10008.5.1.4.1.1.2", 0.5, -1024.0)
write_enhanced("enh/enhanced.dcm")
for name in ("mr", "ct", "enh"):
    os.makedirs(f"nii_{name}")
    subprocess.run(["dcm2niix", "-z", "y", "-f", name, "-o", f"nii_{name}", name],
                   check=True, capture_output=True)

checks = []
for (ii, jj, kk) in [(0, 0, 0), (8, 0, 0), (0, 6, 0), (4, 3, 2), (8, 6, 5)]:
    lps = origin + ii * dc * row + jj * dr * col + kk * dz * normal
    checks.append({"voxel": [ii, jj, kk], "ras": [-lps[0], -lps[1], lps[2]],
                   "stored": int(stored[ii, jj, kk])})
print(json.dumps(checks))
"#;

fn as_vec3(v: &serde_json::Value) -> Vec3 {
    let a = v.as_array().unwrap();
    [0, 1, 2].map(|d| a[d].as_f64().unwrap())
}

/// Every voxel of `ours` lands, through world coordinates, on a voxel
/// centre of `theirs` with the same value.
fn same_world_image(ours: &Volume, theirs: &Volume, what: &str) {
    let [nx, ny, nz] = ours.shape();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let w = ours.voxel_to_world([i as f64, j as f64, k as f64]);
                let p = theirs.world_to_voxel(w);
                let q = p.map(f64::round);
                assert!(
                    (0..3).all(|d| (p[d] - q[d]).abs() < 2e-3),
                    "{what}: voxel {i},{j},{k} lands at {p:?} in dcm2niix's grid"
                );
                let [ti, tj, tk] = q.map(|x| x as usize);
                assert!(
                    q.iter()
                        .zip(theirs.shape())
                        .all(|(&x, n)| x >= 0.0 && (x as usize) < n)
                );
                let (a, b) = (ours.get(i, j, k, 0), theirs.get(ti, tj, tk, 0));
                assert!(
                    (a - b).abs() <= 1e-3 * a.abs().max(1.0),
                    "{what}: {i},{j},{k}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn series_written_by_pydicom_read_as_dcm2niix_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(out) = python_dicom(WRITE_SERIES, d) else {
        return;
    };
    let checks: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for (name, slope, intercept) in [("mr", 1.0, 0.0), ("ct", 0.5, -1024.0), ("enh", 2.0, -5.0)] {
        let ours = read_image(&d.join(name)).unwrap().volume;
        assert_eq!(ours.shape(), [9, 7, 6], "{name}");
        for c in checks.as_array().unwrap() {
            let v = as_vec3(&c["voxel"]);
            let got = ours.voxel_to_world(v);
            let want = as_vec3(&c["ras"]);
            assert!(
                dist(got, want) < 1e-4,
                "{name}: voxel {v:?} at {got:?}, pydicom says {want:?}"
            );
            let value = ours.get(v[0] as usize, v[1] as usize, v[2] as usize, 0) as f64;
            let want_value = c["stored"].as_f64().unwrap() * slope + intercept;
            assert!(
                (value - want_value).abs() < 1e-3,
                "{name}: value {value} vs {want_value}"
            );
        }
        let theirs = read_image(&d.join(format!("nii_{name}/{name}.nii.gz")))
            .unwrap()
            .volume;
        same_world_image(&ours, &theirs, name);
        // Through the binary, written as NIfTI on the series' grid.
        tonno(
            d,
            &[
                "radon",
                "--input",
                name,
                "--out",
                &format!("{name}_radon.nii.gz"),
                "--directions",
                "8",
                "--slices",
                "8",
            ],
        )
        .ok();
        let written = read_image(&d.join(format!("{name}_radon.nii.gz")))
            .unwrap()
            .volume;
        assert!(
            written
                .world_from_voxel()
                .max_abs_diff(ours.world_from_voxel())
                < 1e-4
        );
    }
}

/// The DICOM files pydicom ships: those tonno decodes give pydicom's
/// modality values and geometry; those it cannot (JPEG 2000, JPEG-LS,
/// colour, truncated) fail naming the file and the reason.
const PYDICOM_FILES: &str = r#"
import json, os, shutil
import numpy as np, pydicom
from pydicom.pixels import apply_rescale
# The files inside the wheel (get_testdata_file would download others).
shipped = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
out = {}
for name in ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm",
             "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_jp2klossless.dcm",
             "MR_small_jpeg_ls_lossless.dcm", "MR_truncated.dcm", "SC_rgb_small_odd.dcm", "rtdose.dcm"]:
    src = os.path.join(shipped, name)
    folder = name[:-4]
    os.makedirs(folder)
    shutil.copy(src, os.path.join(folder, name))
    entry = {}
    try:
        ds = pydicom.dcmread(src)
        arr = apply_rescale(ds.pixel_array, ds).astype(np.float64)
        if arr.ndim == 2 and "ImagePositionPatient" in ds:
            ipp = np.array(ds.ImagePositionPatient, float)
            iop = np.array(ds.ImageOrientationPatient, float)
            ps = np.array(ds.PixelSpacing, float)
            j, i = 3, 5
            lps = ipp + i * ps[1] * iop[:3] + j * ps[0] * iop[3:]
            entry = {"shape": [arr.shape[1], arr.shape[0]], "sum": float(arr.sum()),
                     "value": float(arr[j, i]), "ras": [-lps[0], -lps[1], lps[2]]}
    except Exception as e:
        entry = {"pydicom_error": str(e)}
    out[folder] = entry
print(json.dumps(out))
"#;

#[test]
fn the_dicom_files_pydicom_ships_read_as_pydicom_reads_them_or_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(out) = python_dicom(PYDICOM_FILES, d) else {
        return;
    };
    let want: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for name in [
        "CT_small",
        "MR_small",
        "MR_small_RLE",
        "MR_small_bigendian",
        "MR_small_implicit",
        "MR_small_expb",
    ] {
        let w = &want[name];
        let v = read_image(&d.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .volume;
        let shape = w["shape"].as_array().unwrap();
        assert_eq!(
            [v.shape()[0], v.shape()[1], v.shape()[2]],
            [
                shape[0].as_u64().unwrap() as usize,
                shape[1].as_u64().unwrap() as usize,
                1
            ],
            "{name}"
        );
        let sum: f64 = v.data().iter().map(|&x| x as f64).sum();
        let want_sum = w["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-6 * want_sum.abs().max(1.0),
            "{name}: sum {sum} vs {want_sum}"
        );
        assert!(
            (v.get(5, 3, 0, 0) as f64 - w["value"].as_f64().unwrap()).abs() < 1e-3,
            "{name}"
        );
        let got = v.voxel_to_world([5.0, 3.0, 0.0]);
        assert!(
            dist(got, as_vec3(&w["ras"])) < 1e-4,
            "{name}: {got:?} vs {}",
            w["ras"]
        );
    }
    for (name, needles) in [
        (
            "MR_small_jp2klossless",
            &["MR_small_jp2klossless.dcm", "JPEG 2000", "cannot decode"][..],
        ),
        (
            "MR_small_jpeg_ls_lossless",
            &["MR_small_jpeg_ls_lossless.dcm", "JPEG-LS", "cannot decode"][..],
        ),
        ("MR_truncated", &["MR_truncated.dcm"][..]),
        ("SC_rgb_small_odd", &["SC_rgb_small_odd.dcm", "colour"][..]),
        (
            "rtdose",
            &["rtdose.dcm", "PerFrameFunctionalGroupsSequence"][..],
        ),
    ] {
        let run = tonno(d, &["info", name]);
        assert_eq!(run.out.status.code(), Some(2), "{name}");
        run.fails_with(needles);
    }
}
