//! Reading files written by nibabel and pynrrd (fixtures made by
//! `fixtures/make_fixtures.py`), writing files others can read, and clear
//! errors on bad files.

use std::path::{Path, PathBuf};

use tonno_core::Error;
use tonno_core::affine::Affine;
use tonno_core::io::{self, DataType, read_image, write_image};
use tonno_core::volume::Volume;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn fixtures_match_nibabel_and_pynrrd_voxel_for_voxel_and_affine_for_affine() {
    let all = expected();
    assert!(all.len() >= 10);
    for (name, want) in &all {
        let img = read_image(&fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = &img.volume;
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(v.shape().to_vec(), shape, "{name}: shape");
        assert_eq!(
            v.channels() as u64,
            want["channels"].as_u64().unwrap(),
            "{name}: channels"
        );
        assert_eq!(
            img.info.datatype.name(),
            want["datatype"].as_str().unwrap(),
            "{name}: datatype"
        );
        let aff = want["affine"].as_array().unwrap();
        for r in 0..4 {
            for c in 0..4 {
                let w = aff[r].as_array().unwrap()[c].as_f64().unwrap();
                let g = v.world_from_voxel().0[r][c];
                assert!(
                    (w - g).abs() < 1e-5,
                    "{name}: affine[{r}][{c}] {g} vs {w}\n{}",
                    v.world_from_voxel()
                );
            }
        }
        let voxels: Vec<f64> = want["voxels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(voxels.len(), v.data().len(), "{name}: voxel count");
        for (i, (g, w)) in v.data().iter().zip(&voxels).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}: voxel {i}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn spacing_comes_from_the_affine() {
    let img = read_image(&fixtures().join("oblique_u8.nii")).unwrap();
    let s = img.volume.spacing_mm();
    for (g, w) in s.iter().zip([0.8, 1.1, 2.5]) {
        assert!((g - w).abs() < 1e-5, "{s:?}");
    }
    let img = read_image(&fixtures().join("lps_i16_scaled.nii.gz")).unwrap();
    assert_eq!(img.volume.world_from_voxel().orientation_code(), "LPS");
}

fn sample_volume(channels: usize) -> Volume {
    let aff = Affine::from_columns(
        [[0.0, -1.2, 0.1], [0.9, 0.0, 0.0], [0.0, 0.05, 2.0]],
        [10.0, -20.0, 30.0],
    );
    let n = 6 * 5 * 4 * channels;
    Volume::new(
        (0..n).map(|i| (i as f32 * 0.37).sin() * 100.0).collect(),
        [6, 5, 4],
        channels,
        aff,
    )
    .unwrap()
}

#[test]
fn written_files_read_back_with_the_same_voxels_and_affine() {
    let dir = tempfile::tempdir().unwrap();
    for (name, dt, channels) in [
        ("a.nii.gz", DataType::F32, 1),
        ("b.nii", DataType::F64, 2),
        ("c.nii.gz", DataType::I16, 1),
        ("d.nrrd", DataType::F32, 1),
        ("e.nrrd", DataType::F32, 3),
        ("f.nrrd", DataType::U16, 1),
    ] {
        let v = sample_volume(channels);
        let p = dir.path().join(name);
        write_image(&p, &v, dt, None, false).unwrap();
        let back = read_image(&p).unwrap().volume;
        assert_eq!(back.shape(), v.shape(), "{name}");
        assert_eq!(back.channels(), channels, "{name}");
        assert!(
            back.world_from_voxel().max_abs_diff(v.world_from_voxel()) < 1e-4,
            "{name}\n{}",
            back.world_from_voxel()
        );
        for (a, b) in back.data().iter().zip(v.data()) {
            // Integer types round, and unsigned ones saturate at 0.
            let want = match dt {
                DataType::F32 | DataType::F64 => *b,
                DataType::U16 => b.round().max(0.0),
                _ => b.round(),
            };
            assert!((a - want).abs() < 1e-4, "{name}: {a} vs {want}");
        }
    }
}

#[test]
fn heatmaps_keep_the_reference_geometry_fields_exactly() {
    // A mask written for an input keeps the input's qform/sform fields bit for
    // bit, so viewers overlay them whichever transform they read.
    let src = fixtures().join("lps_i16_scaled.nii.gz");
    let input = read_image(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.nii.gz");
    let mask = input
        .volume
        .same_grid(
            input
                .volume
                .data()
                .iter()
                .map(|&v| (v > 10.0) as u8 as f32)
                .collect(),
        )
        .unwrap();
    write_image(&out, &mask, DataType::U8, Some(&input.info), false).unwrap();
    let back = read_image(&out).unwrap();
    let (h0, h1) = (
        input.info.nifti_header.unwrap(),
        back.info.nifti_header.unwrap(),
    );
    assert_eq!(
        (h0.qform_code, h0.sform_code),
        (h1.qform_code, h1.sform_code)
    );
    assert_eq!(
        (h0.quatern_b, h0.quatern_c, h0.quatern_d),
        (h1.quatern_b, h1.quatern_c, h1.quatern_d)
    );
    assert_eq!(
        (h0.quatern_x, h0.quatern_y, h0.quatern_z),
        (h1.quatern_x, h1.quatern_y, h1.quatern_z)
    );
    assert_eq!(h0.pixdim[..4], h1.pixdim[..4]);
    assert_eq!(back.info.datatype, DataType::U8);
    assert_eq!((h1.scl_slope, h1.scl_inter), (1.0, 0.0));
}

#[test]
fn writing_refuses_to_overwrite_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.nii.gz");
    let v = sample_volume(1);
    write_image(&p, &v, DataType::F32, None, false).unwrap();
    let e = write_image(&p, &v, DataType::F32, None, false).unwrap_err();
    assert!(matches!(e, Error::Exists { .. }), "{e}");
    write_image(&p, &v, DataType::F32, None, true).unwrap();
}

/// The error's whole chain as text.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

fn expect_error(path: &Path, needle: &str) {
    let e = read_image(path).expect_err("must fail");
    let msg = chain(&e);
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "error does not name the file: {msg}");
    assert!(
        msg.to_lowercase().contains(needle),
        "error {msg:?} does not say {needle:?}"
    );
}

#[test]
fn bad_files_give_errors_that_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    expect_error(&d.join("missing.nii.gz"), "no such file");

    let gz = std::fs::read(fixtures().join("multichannel_f32.nii.gz")).unwrap();
    std::fs::write(d.join("truncated.nii.gz"), &gz[..gz.len() / 2]).unwrap();
    expect_error(&d.join("truncated.nii.gz"), "truncated");

    let mut corrupt = gz.clone();
    for b in corrupt.iter_mut().skip(20).take(40) {
        *b ^= 0x5a;
    }
    std::fs::write(d.join("corrupt.nii.gz"), &corrupt).unwrap();
    expect_error(&d.join("corrupt.nii.gz"), "corrupt");

    // Header dimensions that disagree with the data, both ways.
    let raw = std::fs::read(fixtures().join("oblique_u8.nii")).unwrap();
    std::fs::write(d.join("short.nii"), &raw[..raw.len() - 7]).unwrap();
    expect_error(&d.join("short.nii"), "truncated");
    let mut long = raw.clone();
    long.extend_from_slice(&[0; 9]);
    std::fs::write(d.join("long.nii"), &long).unwrap();
    expect_error(&d.join("long.nii"), "too long");
    let mut bigger = raw.clone();
    bigger[42..44].copy_from_slice(&9u16.to_le_bytes()); // dim[1] = 9
    std::fs::write(d.join("dims.nii"), &bigger).unwrap();
    expect_error(&d.join("dims.nii"), "dimensions");

    // Unknown datatype code.
    let mut unknown = raw.clone();
    unknown[70..72].copy_from_slice(&77i16.to_le_bytes());
    std::fs::write(d.join("dtype.nii"), &unknown).unwrap();
    expect_error(&d.join("dtype.nii"), "datatype");

    // Not a NIfTI at all, and too short to be one.
    std::fs::write(d.join("text.nii"), b"hello").unwrap();
    expect_error(&d.join("text.nii"), "truncated");

    // NaN and Inf voxels.
    let mut v = sample_volume(1);
    v.data_mut()[7] = f32::NAN;
    v.data_mut()[9] = f32::INFINITY;
    write_image(&d.join("nan.nii.gz"), &v, DataType::F32, None, false).unwrap();
    expect_error(&d.join("nan.nii.gz"), "nan");

    // NRRD: truncated data, bad encoding, missing detached data file.
    let n = std::fs::read(fixtures().join("slicer_lps_raw.nrrd")).unwrap();
    std::fs::write(d.join("short.nrrd"), &n[..n.len() - 5]).unwrap();
    expect_error(&d.join("short.nrrd"), "truncated");
    let text = String::from_utf8_lossy(&n).replace("encoding: raw", "encoding: bzip2");
    std::fs::write(d.join("bz.nrrd"), text.as_bytes()).unwrap();
    expect_error(&d.join("bz.nrrd"), "bzip2");
    let nhdr = std::fs::read_to_string(fixtures().join("detached.nhdr")).unwrap();
    std::fs::write(d.join("orphan.nhdr"), nhdr).unwrap();
    let e = chain(&read_image(&d.join("orphan.nhdr")).unwrap_err());
    assert!(
        e.contains("detached.raw") && e.to_lowercase().contains("no such file"),
        "{e}"
    );

    // Unknown extension.
    std::fs::write(d.join("scan.mha"), b"x").unwrap();
    expect_error(&d.join("scan.mha"), "unknown image format");
}

#[test]
fn nibabel_fallback_affine_when_neither_transform_is_set() {
    // sform_code = qform_code = 0: nibabel centres the grid and flips x
    // (nibabel 5.4.2's `affine` for this very file).
    let raw = std::fs::read(fixtures().join("i8.nii")).unwrap();
    let mut b = raw.clone();
    b[252..254].copy_from_slice(&0i16.to_le_bytes()); // qform_code
    b[254..256].copy_from_slice(&0i16.to_le_bytes()); // sform_code
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("analyze.nii");
    std::fs::write(&p, &b).unwrap();
    let v = read_image(&p).unwrap().volume;
    // shape (3, 3, 2), pixdim 1: origin at voxel (1, 1, 0.5).
    let want = Affine::from_diagonal([-1.0, 1.0, 1.0], [1.0, -1.0, -0.5]);
    assert!(
        v.world_from_voxel().max_abs_diff(&want) < 1e-9,
        "{}",
        v.world_from_voxel()
    );
    let _ = io::case_name(&p);
}
