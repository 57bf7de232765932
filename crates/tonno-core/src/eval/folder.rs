//! Evaluation of folders as `tonno segment` writes them: heatmaps
//! `PRED/CASE_METHOD.nii.gz` against masks `TRUTH/CASE.nii.gz`, the
//! scan-level answers of `PRED/predictions.csv` (or its parts, one per
//! `tonno segment --shard`), and the per-scan
//! threshold rule. Shared by `tonno eval` and the demo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Evaluation, Pair, ThresholdSource, best_threshold, evaluate, evaluate_auto};
use crate::error::{Error, Result};
use crate::io::{case_name, list_images, read_image};

/// The masks of a folder, by case.
pub fn masks(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::dataset(dir, "not a folder"));
    }
    let out: BTreeMap<String, PathBuf> = list_images(dir)?
        .into_iter()
        .map(|p| (case_name(&p), p))
        .collect();
    if out.is_empty() {
        return Err(Error::dataset(
            dir,
            "no masks (.nii, .nii.gz, .nrrd, .nhdr)",
        ));
    }
    Ok(out)
}

/// Methods with a heatmap in `pred` for the cases of `truth`.
pub fn methods_in(pred: &Path, cases: &BTreeMap<String, PathBuf>) -> Result<Vec<String>> {
    let mut found = std::collections::BTreeSet::new();
    for name in file_names(pred)? {
        let Some(stem) = name.strip_suffix(".nii.gz") else {
            continue;
        };
        if stem.ends_with("_mask") {
            continue;
        }
        if let Some(case) = cases
            .keys()
            .filter(|c| stem.starts_with(&format!("{c}_")))
            .max_by_key(|c| c.len())
        {
            found.insert(stem[case.len() + 1..].to_string());
        }
    }
    Ok(found.into_iter().collect())
}

/// Heatmap/mask pairs of one method.
pub fn pairs(pred: &Path, truth: &Path, method: &str) -> Result<Vec<Pair>> {
    let masks = masks(truth)?;
    masks
        .iter()
        .map(|(case, mask)| {
            let heat = pred.join(format!("{case}_{method}.nii.gz"));
            if !heat.is_file() {
                return Err(Error::dataset(
                    &heat,
                    format!("missing the {method} heatmap of case {case}"),
                ));
            }
            let h = read_image(&heat)?.volume;
            let m = read_image(mask)?.volume;
            Pair::new(case, h, m)
        })
        .collect()
}

/// Evaluates one method at `threshold`, or (`None`) at the best mean Dice
/// of `val` when given, else of `test` itself (the oracle).
pub fn evaluate_method(
    test: &[Pair],
    val: Option<&[Pair]>,
    threshold: Option<f32>,
) -> Result<Evaluation> {
    let (t, source) = match (threshold, val) {
        (Some(t), _) => (t, ThresholdSource::Given),
        (None, Some(v)) => (best_threshold(v)?, ThresholdSource::Validation),
        (None, None) => (best_threshold(test)?, ThresholdSource::Oracle),
    };
    Ok(evaluate(test, t, source))
}

/// A method's figures with the per-scan threshold rule.
#[derive(Debug, Clone, Serialize)]
pub struct AutoSummary {
    pub fraction: f64,
    /// Whether scans called negative got empty masks.
    pub gated: bool,
    pub mean_dice: Option<f64>,
    /// Positive cases with an empty mask.
    pub empty_predictions: usize,
    pub median_false_positive_ml: Option<f64>,
    pub mean_false_positive_ml: Option<f64>,
    pub detection_f1: f64,
}

/// Mean Dice of `test` at its own best threshold (the oracle), `None`
/// without a positive case.
pub fn oracle_dice(test: &[Pair]) -> Option<f64> {
    best_threshold(test)
        .ok()
        .and_then(|t| super::mean_dice(test, t))
}

/// Evaluates `test` with the per-scan rule, gated by `gate` (case -> called positive).
pub fn auto_summary(
    test: &[Pair],
    fraction: f64,
    gate: Option<&BTreeMap<String, bool>>,
) -> Result<AutoSummary> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::invalid(
            "auto fraction",
            format!("{fraction}: must be between 0 and 1"),
        ));
    }
    let called = |case: &str| gate.is_none_or(|g| g.get(case).copied().unwrap_or(true));
    let e = evaluate_auto(
        test,
        fraction,
        gate.map(|_| &called as &dyn Fn(&str) -> bool),
    );
    let mut fp: Vec<f64> = e.cases.iter().filter_map(|c| c.false_positive_ml).collect();
    fp.sort_by(f64::total_cmp);
    Ok(AutoSummary {
        fraction,
        gated: gate.is_some(),
        mean_dice: e.mean_dice,
        empty_predictions: e.empty_predictions,
        median_false_positive_ml: (!fp.is_empty()).then(|| {
            let n = fp.len();
            if n % 2 == 1 {
                fp[n / 2]
            } else {
                0.5 * (fp[n / 2 - 1] + fp[n / 2])
            }
        }),
        mean_false_positive_ml: e.mean_false_positive_ml,
        detection_f1: e.detection_f1,
    })
}

/// Scan-level classification against the masks (a scan is positive when
/// its mask has a lesion voxel).
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub cases: usize,
    pub positives: usize,
    /// AUROC of the scores (`None` with one label only).
    pub auroc: Option<f64>,
    /// Accuracy, sensitivity and specificity of the predicted labels
    /// (`None` when predictions.csv has no predicted label).
    pub accuracy: Option<f64>,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
}

/// The names of the entries of folder `dir`.
fn file_names(dir: &Path) -> Result<Vec<String>> {
    let read_error = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|e| {
            Ok(e.map_err(read_error)?
                .file_name()
                .to_string_lossy()
                .into_owned())
        })
        .collect()
}

/// The name of part `index` of `count`'s scan-level answers
/// (`tonno segment --shard`), beside the other parts' in one folder.
pub fn shard_predictions_name(index: usize, count: usize) -> String {
    format!("predictions.shard-{index}-of-{count}.csv")
}

/// A scan's score and predicted label (`None`: no decision threshold).
pub type Prediction = (f64, Option<bool>);

/// The scan-level answers in `pred`: `predictions.csv` and every part
/// `predictions.shard-I-of-N.csv` that `tonno segment --shard` wrote, merged;
/// `None` when there are none. A missing part, parts of different
/// arrays, or a case answered twice is an error naming the files.
pub fn read_predictions(pred: &Path) -> Result<Option<BTreeMap<String, Prediction>>> {
    let mut files = Vec::new();
    let mut counts = std::collections::BTreeSet::new();
    let mut parts = std::collections::BTreeSet::new();
    for name in file_names(pred)? {
        if name == "predictions.csv" {
            files.push(pred.join(name));
        } else if let Some((i, n)) = shard_of(&name) {
            counts.insert(n);
            parts.insert(i);
            files.push(pred.join(name));
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    if counts.len() > 1 {
        return Err(Error::dataset(
            pred,
            format!(
                "predictions of job arrays of different sizes ({counts:?} parts): remove the older ones"
            ),
        ));
    }
    if let Some(&n) = counts.first() {
        let missing: Vec<String> = (0..n)
            .filter(|i| !parts.contains(i))
            .map(|i| shard_predictions_name(i, n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::dataset(
                pred,
                format!(
                    "{} of {n} parts have no predictions ({}): did those tasks of the array finish?",
                    missing.len(),
                    missing.join(", ")
                ),
            ));
        }
    }
    files.sort();
    let mut rows: BTreeMap<String, (Prediction, PathBuf)> = BTreeMap::new();
    for path in files {
        for (case, p) in read_predictions_file(&path)? {
            if let Some((_, first)) = rows.get(&case) {
                return Err(Error::dataset(
                    pred,
                    format!(
                        "case {case} is answered in both {} and {}",
                        first.display(),
                        path.display()
                    ),
                ));
            }
            rows.insert(case, (p, path.clone()));
        }
    }
    Ok(Some(rows.into_iter().map(|(c, (p, _))| (c, p)).collect()))
}

/// `(I, N)` of a name `predictions.shard-I-of-N.csv`.
fn shard_of(name: &str) -> Option<(usize, usize)> {
    let (i, n) = name
        .strip_prefix("predictions.shard-")?
        .strip_suffix(".csv")?
        .split_once("-of-")?;
    let (i, n) = (i.parse().ok()?, n.parse().ok()?);
    (i < n).then_some((i, n))
}

/// One predictions file, `case,score,predicted`, in file order.
fn read_predictions_file(path: &Path) -> Result<Vec<(String, Prediction)>> {
    let text = crate::io::read_text(path)?;
    let bad = |reason: String| Error::format(path, reason);
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("case,score,predicted") {
        return Err(bad(
            "not a predictions file (its header is not case,score,predicted)".into(),
        ));
    }
    let mut rows = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 3 {
            return Err(bad(format!(
                "line {}: {} fields, expected case,score,predicted",
                i + 2,
                f.len()
            )));
        }
        let score: f64 = f[1]
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| bad(format!("line {}: score {:?}", i + 2, f[1])))?;
        let predicted = match f[2] {
            "1" => Some(true),
            "0" => Some(false),
            "" => None,
            other => {
                return Err(bad(format!(
                    "line {}: predicted label {other:?}, expected 1, 0 or nothing",
                    i + 2
                )));
            }
        };
        if !seen.insert(f[0]) {
            return Err(bad(format!("line {}: case {} twice", i + 2, f[0])));
        }
        rows.push((f[0].to_string(), (score, predicted)));
    }
    Ok(rows)
}

/// The scan-level answers of `pred` ([`read_predictions`]) for the cases
/// of `truth`; `None` when there are none.
pub fn classification(
    pred: &Path,
    truth: &BTreeMap<String, PathBuf>,
) -> Result<Option<(Classification, BTreeMap<String, bool>)>> {
    let Some(rows) = read_predictions(pred)? else {
        return Ok(None);
    };
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut predicted = Vec::new();
    for (case, mask) in truth {
        let &(score, p) = rows.get(case).ok_or_else(|| {
            Error::dataset(
                pred,
                format!(
                    "no row for case {case} in its predictions.csv (or its parts, predictions.shard-*.csv)"
                ),
            )
        })?;
        let m = read_image(mask)?;
        scores.push(score);
        labels.push(m.volume.data().iter().any(|&v| v > 0.0));
        predicted.push(p);
    }
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    let all: Option<Vec<bool>> = predicted.iter().copied().collect();
    let rate = |want: bool, n: usize| {
        all.as_ref().and_then(|p| {
            (n > 0).then(|| {
                p.iter()
                    .zip(&labels)
                    .filter(|&(&p, &l)| l == want && p == l)
                    .count() as f64
                    / n as f64
            })
        })
    };
    let gate: BTreeMap<String, bool> = truth
        .keys()
        .zip(&predicted)
        .filter_map(|(c, p)| p.map(|p| (c.clone(), p)))
        .collect();
    Ok(Some((
        Classification {
            cases: labels.len(),
            positives,
            auroc: crate::metrics::auroc(&scores, &labels),
            accuracy: all.as_ref().map(|p| {
                p.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
            }),
            sensitivity: rate(true, positives),
            specificity: rate(false, negatives),
        },
        gate,
    )))
}
