//! Evaluation of folders as `tonno segment` writes them: heatmaps
//! `PRED/CASE_METHOD.nii.gz` against masks `TRUTH/CASE.nii.gz`, the
//! scan-level answers of `PRED/predictions.csv`, and the per-scan
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
    let read_error = |source| Error::Read {
        path: pred.to_path_buf(),
        source,
    };
    let mut found = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(pred).map_err(read_error)? {
        let name = e
            .map_err(read_error)?
            .file_name()
            .to_string_lossy()
            .into_owned();
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

/// Reads `pred/predictions.csv` (as `tonno segment` writes it) for the cases
/// of `truth`; `None` when there is no such file.
pub fn classification(
    pred: &Path,
    truth: &BTreeMap<String, PathBuf>,
) -> Result<Option<(Classification, BTreeMap<String, bool>)>> {
    let path = pred.join("predictions.csv");
    if !path.is_file() {
        return Ok(None);
    }
    let text = crate::io::read_text(&path)?;
    let bad = |reason: String| Error::format(&path, reason);
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("case,score,predicted") {
        return Err(bad(
            "not a predictions file (its header is not case,score,predicted)".into(),
        ));
    }
    let mut rows = BTreeMap::new();
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
        rows.insert(f[0].to_string(), (score, predicted));
    }
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut predicted = Vec::new();
    for (case, mask) in truth {
        let &(score, p) = rows
            .get(case)
            .ok_or_else(|| bad(format!("no row for case {case}")))?;
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
