//! Datasets a user brings: a Medical Segmentation Decathlon folder
//! (`dataset.json`, `imagesTr/`, `labelsTr/`, `imagesTs/`, optional
//! `labelsTs/`), or a folder of images with a `labels.csv` (`case,label`).
//!
//! Image-level labels (0/1) come from a CSV (`labels.csv` in the folder by
//! default), or from the masks (`label = any(mask > 0)`) for benchmarks.
//! Masks are optional and only used to evaluate.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::{case_name, list_images, read_image};
use crate::error::{Error, Result};

/// Where a case belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `imagesTr` (or a plain folder).
    Train,
    /// `imagesTs`.
    Test,
}

/// One scan of a dataset.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Case {
    /// File name without extension.
    pub name: String,
    /// Path of the image.
    pub image: PathBuf,
    /// Path of its mask, when there is one.
    pub mask: Option<PathBuf>,
    /// Image-level label: `Some(true)` when the region is present.
    pub label: Option<bool>,
    /// Training or test split.
    pub split: Split,
    /// The subject (patient) the scan is of, from the labels CSV's optional
    /// `subject` column: validation holds out whole subjects.
    pub subject: Option<String>,
}

/// Where the labels come from.
#[derive(Debug, Clone, Default)]
pub enum LabelSource {
    /// `labels.csv` in the dataset folder if it exists, else no labels.
    #[default]
    Default,
    /// This CSV file (`case,label`).
    Csv(PathBuf),
    /// `any(mask > 0)` for every case that has a mask.
    Masks,
}

/// A dataset folder, its cases sorted by name.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub cases: Vec<Case>,
    /// Channel names from `dataset.json`'s `modality`, when given.
    pub modalities: Vec<String>,
}

impl Dataset {
    /// Opens a dataset folder. Errors name the folder or file and the
    /// problem: missing folder, no images, a CSV naming an unknown case or a
    /// label other than 0/1, a mask that cannot be read.
    pub fn open(root: &Path, labels: &LabelSource) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::dataset(root, "not a folder (or it does not exist)"));
        }
        let json = root.join("dataset.json");
        let (mut cases, modalities) = if json.is_file() {
            decathlon_cases(root, &json)?
        } else {
            (plain_cases(root)?, Vec::new())
        };
        if cases.is_empty() {
            return Err(Error::dataset(
                root,
                "no images found (.nii, .nii.gz, .nrrd, .nhdr)",
            ));
        }
        cases.sort_by(|a, b| a.name.cmp(&b.name));
        for w in cases.windows(2) {
            if w[0].name == w[1].name {
                return Err(Error::dataset(
                    root,
                    format!("two images are named {:?}", w[0].name),
                ));
            }
        }
        match labels {
            LabelSource::Default => {
                let csv = root.join("labels.csv");
                if csv.is_file() {
                    apply_csv(&mut cases, &csv)?;
                }
            }
            LabelSource::Csv(csv) => apply_csv(&mut cases, csv)?,
            LabelSource::Masks => {
                for case in &mut cases {
                    if let Some(mask) = &case.mask {
                        let m = read_image(mask)?;
                        case.label = Some(m.volume.data().iter().any(|&v| v > 0.0));
                    }
                }
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            cases,
            modalities,
        })
    }

    /// Cases with an image-level label.
    pub fn labelled(&self) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(|c| c.label.is_some())
    }

    /// Cases of one split.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &Case> {
        self.cases.iter().filter(move |c| c.split == split)
    }

    /// The case with this name.
    pub fn case(&self, name: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.name == name)
    }
}

fn masks_by_case(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    if !dir.is_dir() {
        return Ok(HashMap::new());
    }
    Ok(list_images(dir)?
        .into_iter()
        .map(|p| (case_name(&p), p))
        .collect())
}

/// Resolves a `./imagesTr/x.nii.gz` style entry of dataset.json.
fn resolve(root: &Path, json: &Path, entry: &str) -> Result<PathBuf> {
    let p = root.join(entry.trim_start_matches("./"));
    if p.is_file() || super::dicom::is_series_dir(&p) {
        return Ok(p);
    }
    // nnU-Net style channel files (`x_0000.nii.gz`) are not listed by name.
    Err(Error::dataset(
        json,
        format!("lists {entry:?}, but {} does not exist", p.display()),
    ))
}

fn decathlon_cases(root: &Path, json: &Path) -> Result<(Vec<Case>, Vec<String>)> {
    let text = super::read_text(json)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::dataset(json, format!("not valid JSON: {e}")))?;
    let modalities: Vec<String> = v
        .get("modality")
        .and_then(|m| m.as_object())
        .map(|m| {
            let sorted: BTreeMap<usize, String> = m
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                .collect();
            sorted.into_values().collect()
        })
        .unwrap_or_default();
    let mut cases = Vec::new();
    let training = v
        .get("training")
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    for item in training {
        let image = item
            .get("image")
            .and_then(|i| i.as_str())
            .ok_or_else(|| Error::dataset(json, "a training entry has no \"image\""))?;
        let image = resolve(root, json, image)?;
        let mask = match item.get("label").and_then(|l| l.as_str()) {
            Some(l) => Some(resolve(root, json, l)?),
            None => None,
        };
        cases.push(Case {
            name: case_name(&image),
            image,
            mask,
            label: None,
            subject: None,
            split: Split::Train,
        });
    }
    let test_masks = masks_by_case(&root.join("labelsTs"))?;
    let test = v
        .get("test")
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    for item in test {
        let entry = item
            .as_str()
            .or_else(|| item.get("image").and_then(|i| i.as_str()))
            .ok_or_else(|| {
                Error::dataset(json, "a test entry is neither a path nor has an \"image\"")
            })?;
        let image = resolve(root, json, entry)?;
        let name = case_name(&image);
        cases.push(Case {
            mask: test_masks.get(&name).cloned(),
            name,
            image,
            label: None,
            subject: None,
            split: Split::Test,
        });
    }
    if cases.is_empty() {
        // A dataset.json without lists: fall back to the folders.
        for (dir, split, masks) in [
            ("imagesTr", Split::Train, "labelsTr"),
            ("imagesTs", Split::Test, "labelsTs"),
        ] {
            let d = root.join(dir);
            if d.is_dir() {
                let m = masks_by_case(&root.join(masks))?;
                for image in list_images(&d)? {
                    let name = case_name(&image);
                    cases.push(Case {
                        mask: m.get(&name).cloned(),
                        name,
                        image,
                        label: None,
                        subject: None,
                        split,
                    });
                }
            }
        }
    }
    Ok((cases, modalities))
}

fn plain_cases(root: &Path) -> Result<Vec<Case>> {
    let images_dir = if root.join("images").is_dir() {
        root.join("images")
    } else {
        root.to_path_buf()
    };
    let mut masks = HashMap::new();
    for d in ["masks", "labels"] {
        masks.extend(masks_by_case(&root.join(d))?);
    }
    Ok(list_images(&images_dir)?
        .into_iter()
        .map(|image| {
            let name = case_name(&image);
            Case {
                mask: masks.get(&name).cloned(),
                name,
                image,
                label: None,
                subject: None,
                split: Split::Train,
            }
        })
        .collect())
}

/// Reads `case,label` rows and sets the labels. Every row must name a case
/// of the dataset and give 0 or 1.
fn apply_csv(cases: &mut [Case], csv_path: &Path) -> Result<()> {
    let rows = read_labelled_rows(csv_path)?;
    let index: HashMap<String, usize> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    for (name, label, subject) in rows {
        let i = *index.get(&name).ok_or_else(|| {
            Error::dataset(
                csv_path,
                format!("names case {name:?}, which has no image in the dataset"),
            )
        })?;
        cases[i].subject = subject;
        cases[i].label = Some(label);
    }
    Ok(())
}

/// Parses a `case,label` CSV (header required; extra columns ignored).
pub fn read_labels_csv(path: &Path) -> Result<Vec<(String, bool)>> {
    Ok(read_labelled_rows(path)?
        .into_iter()
        .map(|(case, label, _)| (case, label))
        .collect())
}

/// [`read_labels_csv`] with the optional `subject` column (`None` where the
/// column is absent or the cell empty).
fn read_labelled_rows(path: &Path) -> Result<Vec<(String, bool, Option<String>)>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|e| match e.into_kind() {
            csv::ErrorKind::Io(source) => Error::Read {
                path: path.to_path_buf(),
                source,
            },
            other => Error::dataset(path, format!("{other:?}")),
        })?;
    let headers = reader
        .headers()
        .map_err(|e| Error::dataset(path, format!("cannot read the header row: {e}")))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let si = col("subject");
    let (Some(ci), Some(li)) = (col("case"), col("label")) else {
        return Err(Error::dataset(
            path,
            format!(
                "the header row must name columns \"case\" and \"label\", found {:?}",
                headers.iter().collect::<Vec<_>>()
            ),
        ));
    };
    let mut out = Vec::new();
    let mut seen = HashMap::new();
    for (row, rec) in reader.records().enumerate() {
        let line = row + 2;
        let rec = rec.map_err(|e| Error::dataset(path, format!("line {line}: {e}")))?;
        let case = rec.get(ci).unwrap_or("").to_string();
        let raw = rec.get(li).unwrap_or("");
        if case.is_empty() {
            return Err(Error::dataset(
                path,
                format!("line {line}: empty case name"),
            ));
        }
        let label = match raw {
            "0" => false,
            "1" => true,
            other => {
                return Err(Error::dataset(
                    path,
                    format!("line {line}: label {other:?} for case {case:?} is not 0 or 1"),
                ));
            }
        };
        if let Some(prev) = seen.insert(case.clone(), line) {
            return Err(Error::dataset(
                path,
                format!("line {line}: case {case:?} already listed on line {prev}"),
            ));
        }
        let subject = si
            .and_then(|si| rec.get(si))
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        out.push((case, label, subject));
    }
    if out.is_empty() {
        return Err(Error::dataset(path, "no labelled cases"));
    }
    Ok(out)
}

/// Writes `case,label` rows, with a `subject` column when `subjects` is given
/// (one per row).
pub fn write_labels_csv(
    path: &Path,
    rows: &[(String, bool)],
    subjects: Option<&[String]>,
    overwrite: bool,
) -> Result<()> {
    let mut text = String::from(if subjects.is_some() {
        "case,label,subject\n"
    } else {
        "case,label\n"
    });
    for (i, (case, label)) in rows.iter().enumerate() {
        match subjects {
            Some(s) => text += &format!("{case},{},{}\n", *label as u8, s[i]),
            None => text += &format!("{case},{}\n", *label as u8),
        }
    }
    super::write_text(path, &text, overwrite)
}
