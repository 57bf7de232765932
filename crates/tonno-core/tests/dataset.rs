//! Opening datasets: the Decathlon layout written by the synthetic
//! generator, a plain folder with labels.csv, labels from masks, and the
//! errors users hit.

use std::path::Path;

use tonno_core::io::dataset::{Dataset, LabelSource, Split};
use tonno_core::synth::{SynthConfig, write_dataset};

fn synth(dir: &Path, cases: usize) {
    let cfg = SynthConfig {
        size: 16,
        cases,
        seed: 9,
        ..SynthConfig::default()
    };
    write_dataset(dir, &cfg, false, &|_, _| {}).unwrap();
}

#[test]
fn synthetic_dataset_opens_as_a_decathlon_folder_with_csv_labels() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 8);
    let ds = Dataset::open(dir.path(), &LabelSource::Default).unwrap();
    assert_eq!(ds.cases.len(), 8);
    assert_eq!(ds.modalities, vec!["MRI".to_string()]);
    assert_eq!(ds.split(Split::Test).count(), 2);
    assert!(
        ds.cases
            .iter()
            .all(|c| c.mask.is_some() && c.label.is_some())
    );
    // CSV labels agree with the masks.
    let from_masks = Dataset::open(dir.path(), &LabelSource::Masks).unwrap();
    for (a, b) in ds.cases.iter().zip(&from_masks.cases) {
        assert_eq!(a.label, b.label, "{}", a.name);
    }
}

#[test]
fn writing_into_a_non_empty_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 2);
    let cfg = SynthConfig {
        size: 16,
        cases: 2,
        ..SynthConfig::default()
    };
    let e = write_dataset(dir.path(), &cfg, false, &|_, _| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

#[test]
fn plain_folder_with_labels_csv() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 4);
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    for e in std::fs::read_dir(dir.path().join("imagesTr")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, plain.join(p.file_name().unwrap())).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(&plain)
        .unwrap()
        .map(|e| tonno_core::io::case_name(&e.unwrap().path()))
        .collect();
    let csv = format!("case,label\n{},1\n{},0\n", names[0], names[1]);
    std::fs::write(plain.join("labels.csv"), csv).unwrap();
    let ds = Dataset::open(&plain, &LabelSource::Default).unwrap();
    assert_eq!(ds.cases.len(), names.len());
    assert_eq!(ds.labelled().count(), 2);
    assert_eq!(ds.case(&names[0]).unwrap().label, Some(true));
}

fn open_err(root: &Path, labels: LabelSource) -> String {
    let e = Dataset::open(root, &labels).unwrap_err();
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

#[test]
fn label_and_folder_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 4);
    let csv = dir.path().join("bad.csv");

    std::fs::write(&csv, "case,label\nnot_a_case,1\n").unwrap();
    let e = open_err(dir.path(), LabelSource::Csv(csv.clone()));
    assert!(
        e.contains("bad.csv") && e.contains("not_a_case") && e.contains("no image"),
        "{e}"
    );

    std::fs::write(&csv, "case,label\ncase_000,2\n").unwrap();
    let e = open_err(dir.path(), LabelSource::Csv(csv.clone()));
    assert!(e.contains("bad.csv") && e.contains("not 0 or 1"), "{e}");

    std::fs::write(&csv, "name,class\ncase_000,1\n").unwrap();
    let e = open_err(dir.path(), LabelSource::Csv(csv.clone()));
    assert!(e.contains("\"case\" and \"label\""), "{e}");

    std::fs::write(&csv, "case,label\n").unwrap();
    let e = open_err(dir.path(), LabelSource::Csv(csv.clone()));
    assert!(e.contains("no labelled cases"), "{e}");

    std::fs::write(&csv, "case,label\ncase_000,1\ncase_000,0\n").unwrap();
    let e = open_err(dir.path(), LabelSource::Csv(csv.clone()));
    assert!(e.contains("already listed"), "{e}");

    let e = open_err(dir.path(), LabelSource::Csv(dir.path().join("nope.csv")));
    assert!(e.contains("nope.csv"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = open_err(&empty, LabelSource::Default);
    assert!(e.contains("empty") && e.contains("no images"), "{e}");

    let e = open_err(&dir.path().join("missing"), LabelSource::Default);
    assert!(e.contains("missing") && e.contains("does not exist"), "{e}");

    // dataset.json naming a file that is not there.
    let listed = ["imagesTr", "imagesTs"].map(|d| dir.path().join(d).join("case_000.nii.gz"));
    let gone = listed
        .iter()
        .find(|p| p.exists())
        .expect("case_000 is in one split");
    std::fs::remove_file(gone).unwrap();
    let e = open_err(dir.path(), LabelSource::Default);
    assert!(
        e.contains("dataset.json") && e.contains("does not exist"),
        "{e}"
    );
}
