//! DICOM series in: geometry checked against the image plane module's
//! formula evaluated on the files' own attributes (read back with
//! dicom-object, not through tonno), values against what was stored, and a
//! clear error, naming the file, for every way a series can be unusable.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use tonno_core::affine::{Affine, Vec3, add, cross, scale};
use tonno_core::io::dicom::{self, SeriesOptions, write_series};
use tonno_core::io::{self, Format, case_name, list_images, read_image, read_image_series};
use tonno_core::volume::Volume;

/// An oblique, anisotropic grid: rows and columns rotated 20 degrees about
/// one axis and 10 about another, 0.8 x 0.9 mm pixels, 2.5 mm slices, an
/// origin far from zero; `shear` mm of row-direction offset per slice makes
/// a gantry tilt.
fn oblique_affine(shear: f64) -> Affine {
    let (a, b) = (20f64.to_radians(), 10f64.to_radians());
    let r: Vec3 = [a.cos(), a.sin(), 0.0];
    let c0: Vec3 = [-a.sin(), a.cos(), 0.0];
    let c: Vec3 = add(scale(c0, b.cos()), scale([0.0, 0.0, 1.0], b.sin()));
    let n = cross(r, c);
    Affine::from_columns(
        [
            scale(r, 0.8),
            scale(c, 0.9),
            add(scale(n, 2.5), scale(r, shear)),
        ],
        [-101.25, 37.5, 12.0],
    )
}

/// Integer values (as stored) that differ along every axis.
fn phantom(shape: [usize; 3], affine: Affine) -> Volume {
    Volume::from_fn(shape, affine, |i, j, k| {
        (i as f32) * 3.0 + (j as f32) * 50.0 - (k as f32) * 400.0 + 7.0
    })
    .unwrap()
}

fn write(dir: &Path, v: &Volume, options: &SeriesOptions) {
    write_series(dir, v, options, false).unwrap();
}

/// World (RAS) position of voxel `(i, j, k)` from the files themselves:
/// `IPP + i Δc r + j Δr c` of the file whose slice it is, LPS to RAS.
fn world_from_files(files: &[PathBuf], i: usize, j: usize, k: usize) -> Vec3 {
    let obj = dicom_object::open_file(&files[k]).unwrap();
    let f = |t| obj.element(t).unwrap().to_multi_float64().unwrap();
    let (ipp, iop, ps) = (
        f(tags::IMAGE_POSITION_PATIENT),
        f(tags::IMAGE_ORIENTATION_PATIENT),
        f(tags::PIXEL_SPACING),
    );
    let lps: Vec<f64> = (0..3)
        .map(|d| ipp[d] + i as f64 * ps[1] * iop[d] + j as f64 * ps[0] * iop[3 + d])
        .collect();
    [-lps[0], -lps[1], lps[2]]
}

fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn dist(a: Vec3, b: Vec3) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

#[test]
fn an_oblique_series_reads_with_the_image_plane_geometry_and_its_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("series");
    let v = phantom([7, 5, 6], oblique_affine(0.0));
    write(&dir, &v, &SeriesOptions::default());
    assert!(dicom::is_series_dir(&dir));
    let img = read_image(&dir).unwrap();
    assert_eq!(img.info.format, Format::Dicom);
    let r = &img.volume;
    assert_eq!(r.shape(), [7, 5, 6]);
    assert_eq!(r.data(), v.data(), "stored integers come back exactly");
    // DS values carry six decimals.
    assert!(r.world_from_voxel().max_abs_diff(v.world_from_voxel()) < 1e-5);
    let files = dicom_files(&dir);
    for (i, j, k) in [(0, 0, 0), (6, 0, 0), (0, 4, 0), (3, 2, 5), (6, 4, 5)] {
        let want = world_from_files(&files, i, j, k);
        let got = r.voxel_to_world([i as f64, j as f64, k as f64]);
        assert!(
            dist(want, got) < 1e-5,
            "voxel {i},{j},{k}: {got:?} vs {want:?}"
        );
    }
    let info = img.info.dicom.as_ref().unwrap();
    assert_eq!((info.files, info.slices, info.multi_frame), (6, 6, false));
    assert!((info.slice_step_mm - 2.5).abs() < 1e-5);
    assert_eq!(info.gantry_tilt_deg, 0.0);
    assert!(info.transfer_syntax.contains("1.2.840.10008.1.2.1"));
}

#[test]
fn rescale_slope_and_intercept_give_modality_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    // CT numbers -1024..: stored as (v + 1024) / 0.5.
    let v = Volume::from_fn([4, 4, 3], Affine::identity(), |i, j, k| {
        -1024.0 + 0.5 * (i + 4 * j + 16 * k) as f32
    })
    .unwrap();
    let options = SeriesOptions {
        modality: "CT".into(),
        rescale_slope: 0.5,
        rescale_intercept: -1024.0,
        ..SeriesOptions::default()
    };
    write(&dir, &v, &options);
    let obj = dicom_object::open_file(dir.join("slice_0002.dcm")).unwrap();
    let stored = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    // Voxel (1, 0, 1): -1024 + 0.5 * 17, stored as 17.
    assert_eq!(i16::from_le_bytes([stored[2], stored[3]]), 17);
    let img = read_image(&dir).unwrap();
    assert_eq!(img.volume.data(), v.data());
    let info = img.info.dicom.unwrap();
    assert_eq!(info.rescale, [0.5, -1024.0]);
    assert_eq!(info.modality, "CT");
}

#[test]
fn slices_are_ordered_by_position_not_by_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("series");
    let v = phantom([4, 3, 5], oblique_affine(0.0));
    write(&dir, &v, &SeriesOptions::default());
    // Reverse the names: slice 1 becomes the last file by name.
    let files = dicom_files(&dir);
    for (n, f) in files.iter().enumerate() {
        std::fs::rename(f, dir.join(format!("tmp{n}"))).unwrap();
    }
    for n in 0..files.len() {
        std::fs::rename(
            dir.join(format!("tmp{n}")),
            dir.join(format!("IM{:03}", files.len() - n)),
        )
        .unwrap();
    }
    std::fs::write(dir.join("README.txt"), "not DICOM, skipped").unwrap();
    let r = read_image(&dir).unwrap().volume;
    assert_eq!(r.data(), v.data());
    assert!(r.world_from_voxel().max_abs_diff(v.world_from_voxel()) < 1e-5);
}

#[test]
fn an_enhanced_multi_frame_file_reads_like_its_series() {
    let tmp = tempfile::tempdir().unwrap();
    let v = phantom([6, 5, 4], oblique_affine(0.0));
    let single = tmp.path().join("single");
    let multi = tmp.path().join("multi");
    write(&single, &v, &SeriesOptions::default());
    let options = SeriesOptions {
        multi_frame: true,
        rescale_slope: 2.0,
        rescale_intercept: 1.0,
        ..SeriesOptions::default()
    };
    let w = Volume::from_fn([6, 5, 4], *v.world_from_voxel(), |i, j, k| {
        2.0 * v.get(i, j, k, 0) + 1.0
    })
    .unwrap();
    write(&multi, &w, &options);
    let file = multi.join("multiframe.dcm");
    for path in [file.clone(), multi.clone()] {
        let img = read_image(&path).unwrap();
        assert_eq!(img.volume.data(), w.data(), "{}", path.display());
        assert!(
            img.volume
                .world_from_voxel()
                .max_abs_diff(v.world_from_voxel())
                < 1e-5
        );
        let info = img.info.dicom.unwrap();
        assert!(info.multi_frame);
        assert_eq!((info.files, info.slices), (1, 4));
        assert_eq!(info.rescale, [2.0, 1.0]);
    }
    assert_eq!(case_name(&file), "multiframe");
    let single_geom = *read_image(&single).unwrap().volume.world_from_voxel();
    assert!(single_geom.max_abs_diff(v.world_from_voxel()) < 1e-5);
}

#[test]
fn a_gantry_tilt_is_kept_exactly_as_a_sheared_affine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tilted");
    // 0.5 mm of shift per 2.5 mm slice: atan(0.5 / 2.5) = 11.31 degrees.
    let v = phantom([5, 4, 6], oblique_affine(0.5));
    write(&dir, &v, &SeriesOptions::default());
    let img = read_image(&dir).unwrap();
    let r = &img.volume;
    assert_eq!(r.data(), v.data());
    assert!(r.world_from_voxel().max_abs_diff(v.world_from_voxel()) < 1e-5);
    let files = dicom_files(&dir);
    for (i, j, k) in [(0, 0, 5), (4, 3, 5), (2, 1, 3)] {
        let want = world_from_files(&files, i, j, k);
        let got = r.voxel_to_world([i as f64, j as f64, k as f64]);
        assert!(dist(want, got) < 1e-5, "voxel {i},{j},{k}");
    }
    let info = img.info.dicom.unwrap();
    assert!((info.gantry_tilt_deg - (0.5f64 / 2.5).atan().to_degrees()).abs() < 1e-3);
    assert!((info.slice_step_mm - 2.5).abs() < 1e-5);
    // NIfTI's sform holds the shear: written and read back, the same affine.
    let out = tmp.path().join("tilted.nii.gz");
    io::write_image(&out, r, io::DataType::F32, None, false).unwrap();
    let back = read_image(&out).unwrap().volume;
    assert!(back.world_from_voxel().max_abs_diff(r.world_from_voxel()) < 1e-4);
}

fn err_text(path: &Path) -> String {
    read_image(path).unwrap_err().to_string()
}

#[test]
fn a_missing_slice_is_refused_naming_the_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("series");
    write(
        &dir,
        &phantom([4, 4, 8], Affine::identity()),
        &SeriesOptions::default(),
    );
    std::fs::remove_file(dir.join("slice_0005.dcm")).unwrap();
    let e = err_text(&dir);
    assert!(e.contains("irregular slice spacing"), "{e}");
    assert!(
        e.contains("slice_0004.dcm") && e.contains("slice_0006.dcm"),
        "{e}"
    );
    assert!(e.contains("1 slice(s) missing?"), "{e}");
}

#[test]
fn several_series_need_a_choice_and_the_choice_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, mixed) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("mixed"),
    );
    let va = phantom([4, 3, 3], Affine::identity());
    let vb = Volume::from_fn([4, 3, 5], Affine::identity(), |i, _, _| i as f32).unwrap();
    write(&a, &va, &SeriesOptions::default());
    let other = SeriesOptions {
        uid_root: "2.25.999".into(),
        series_description: "second".into(),
        ..SeriesOptions::default()
    };
    write(&b, &vb, &other);
    std::fs::create_dir(&mixed).unwrap();
    for (src, prefix) in [(&a, "a"), (&b, "b")] {
        for f in dicom_files(src) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&f, mixed.join(format!("{prefix}_{name}"))).unwrap();
        }
    }
    let e = err_text(&mixed);
    assert!(
        e.contains("holds 2 series; choose one with --series UID"),
        "{e}"
    );
    assert!(
        e.contains("2.25.1234567.1 (3 file(s)") && e.contains("2.25.999.1 (5 file(s)"),
        "{e}"
    );
    let chosen = read_image_series(&mixed, Some("2.25.999.1")).unwrap();
    assert_eq!(chosen.volume.data(), vb.data());
    assert_eq!(chosen.info.dicom.unwrap().series_description, "second");
    let e = read_image_series(&mixed, Some("1.2.3"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds no series 1.2.3"), "{e}");
    let listed = dicom::series_in(&mixed).unwrap();
    assert_eq!(listed.len(), 2);
    let nifti = tmp.path().join("x.nii");
    io::write_image(&nifti, &va, io::DataType::F32, None, false).unwrap();
    let e = read_image_series(&nifti, Some("2.25.999.1"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not DICOM"), "{e}");
}

/// Rewrites `file` with `edit` applied to its data set.
fn edit_file(file: &Path, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(file).unwrap();
    edit(&mut obj);
    obj.write_to_file(file).unwrap();
}

#[test]
fn a_localizer_in_the_series_and_stacked_acquisitions_are_refused() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("loc");
    write(
        &dir,
        &phantom([4, 4, 5], Affine::identity()),
        &SeriesOptions::default(),
    );
    edit_file(&dir.join("slice_0003.dcm"), |obj| {
        obj.put(DataElement::new(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            PrimitiveValue::Strs(
                ["0", "1", "0", "0", "0", "-1"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ),
        ));
    });
    let e = err_text(&dir);
    assert!(
        e.contains("different orientations") && e.contains("slice_0003.dcm"),
        "{e}"
    );

    let dir = tmp.path().join("echoes");
    write(
        &dir,
        &phantom([4, 4, 4], Affine::identity()),
        &SeriesOptions::default(),
    );
    let first = dicom_object::open_file(dir.join("slice_0001.dcm")).unwrap();
    let ipp = first.element(tags::IMAGE_POSITION_PATIENT).unwrap().clone();
    edit_file(&dir.join("slice_0002.dcm"), |obj| {
        obj.put(ipp);
    });
    let e = err_text(&dir);
    assert!(e.contains("at the same position"), "{e}");
}

#[test]
fn compressed_data_tonno_cannot_decode_is_refused_naming_the_syntax() {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, VR};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j2k");
    write(
        &dir,
        &phantom([4, 4, 3], Affine::identity()),
        &SeriesOptions::default(),
    );
    for f in dicom_files(&dir) {
        let obj = dicom_object::open_file(&f).unwrap();
        let mut inner = obj.into_inner();
        inner.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(vec![], vec![vec![0xff, 0x4f, 0xff, 0x51, 0, 0]]),
        ));
        let out = inner
            .with_meta(
                dicom_object::FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.4.90")
                    .implementation_class_uid("2.25.1"),
            )
            .unwrap();
        out.write_to_file(&f).unwrap();
    }
    let e = err_text(&dir);
    assert!(
        e.contains("JPEG 2000") && e.contains("1.2.840.10008.1.2.4.90"),
        "{e}"
    );
    assert!(
        e.contains("cannot decode") && e.contains("slice_0001.dcm"),
        "{e}"
    );
}

#[test]
fn truncated_empty_and_single_slice_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("series");
    write(
        &dir,
        &phantom([8, 8, 3], Affine::identity()),
        &SeriesOptions::default(),
    );
    let f = dir.join("slice_0002.dcm");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 40]).unwrap();
    let e = err_text(&dir);
    assert!(e.contains("slice_0002.dcm"), "{e}");

    std::fs::write(&f, &bytes[..200]).unwrap();
    let e = err_text(&dir);
    assert!(
        e.contains("slice_0002.dcm") && e.contains("not a readable DICOM file"),
        "{e}"
    );

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "hello").unwrap();
    let e = err_text(&empty);
    assert!(e.contains("holds no DICOM image files"), "{e}");

    let one = dir.join("slice_0001.dcm");
    let e = err_text(&one);
    assert!(e.contains("one slice; give the folder"), "{e}");

    let e = err_text(&tmp.path().join("nowhere"));
    assert!(e.contains("nowhere"), "{e}");
    let e = io::write_image(
        &tmp.path().join("out.dcm"),
        &phantom([2, 2, 2], Affine::identity()),
        io::DataType::F32,
        None,
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("writes NIfTI"), "{e}");
}

#[test]
fn a_folder_of_series_folders_lists_each_as_a_case() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(
        &root.join("case_b"),
        &phantom([3, 3, 3], Affine::identity()),
        &SeriesOptions::default(),
    );
    write(
        &root.join("case_a"),
        &phantom([3, 3, 3], Affine::identity()),
        &SeriesOptions::default(),
    );
    std::fs::create_dir(root.join("not_a_series")).unwrap();
    io::write_image(
        &root.join("case_c.nii.gz"),
        &phantom([3, 3, 3], Affine::identity()),
        io::DataType::F32,
        None,
        false,
    )
    .unwrap();
    let listed: Vec<String> = list_images(root)
        .unwrap()
        .iter()
        .map(|p| case_name(p))
        .collect();
    assert_eq!(listed, ["case_a", "case_b", "case_c"]);
    assert!(!dicom::is_series_dir(root));
    assert!(
        write_series(
            &root.join("case_a"),
            &phantom([3, 3, 3], Affine::identity()),
            &SeriesOptions::default(),
            false
        )
        .is_err(),
        "a folder with files is not overwritten"
    );
}
