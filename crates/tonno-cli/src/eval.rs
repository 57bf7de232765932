//! `tonno eval`: heatmaps against masks, per case and overall.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tonno_core::eval::{
    AUTO_FRACTION, Evaluation, Pair, ThresholdSource, best_threshold, evaluate, evaluate_auto,
};
use tonno_core::io::{case_name, list_images, read_image};
use tonno_ml::methods::Method;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder of heatmaps named CASE_METHOD.nii.gz (as `tonno segment` writes them).
    #[arg(long)]
    pred: PathBuf,
    /// Folder of masks named CASE.nii.gz (e.g. labelsTs).
    #[arg(long)]
    truth: PathBuf,
    /// Methods to evaluate (default: every method found).
    #[arg(long = "method", value_delimiter = ',')]
    methods: Vec<String>,
    /// "auto" (best mean Dice on --val-pred/--val-truth, else on the test set itself) or a value.
    #[arg(long, default_value = "auto")]
    threshold: String,
    /// Validation heatmaps for choosing the threshold.
    #[arg(long, requires = "val_truth")]
    val_pred: Option<PathBuf>,
    /// Validation masks.
    #[arg(long, requires = "val_pred")]
    val_truth: Option<PathBuf>,
    /// The fraction of `tonno segment --threshold auto`'s per-scan rule, for
    /// the "auto" columns (default: each method's own, as `tonno segment`).
    #[arg(long)]
    auto_fraction: Option<f64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The masks of a folder, by case.
fn masks(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    anyhow::ensure!(dir.is_dir(), "{}: not a folder", dir.display());
    let out: BTreeMap<String, PathBuf> = list_images(dir)?
        .into_iter()
        .map(|p| (case_name(&p), p))
        .collect();
    anyhow::ensure!(!out.is_empty(), "{}: no masks", dir.display());
    Ok(out)
}

/// Methods with a heatmap in `pred` for the cases of `truth`.
pub fn methods_in(pred: &Path, cases: &BTreeMap<String, PathBuf>) -> anyhow::Result<Vec<String>> {
    let mut found = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(pred).with_context(|| format!("listing {}", pred.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
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
pub fn pairs(pred: &Path, truth: &Path, method: &str) -> anyhow::Result<Vec<Pair>> {
    let masks = masks(truth)?;
    masks
        .iter()
        .map(|(case, mask)| {
            let heat = pred.join(format!("{case}_{method}.nii.gz"));
            anyhow::ensure!(
                heat.is_file(),
                "{}: missing the {method} heatmap of case {case}",
                heat.display()
            );
            let h = read_image(&heat)
                .with_context(|| format!("reading {}", heat.display()))?
                .volume;
            let m = read_image(mask)
                .with_context(|| format!("reading {}", mask.display()))?
                .volume;
            Ok(Pair::new(case, h, m)?)
        })
        .collect()
}

/// Evaluates one method: the threshold from `val` if given, else the oracle.
pub fn evaluate_method(
    test: &[Pair],
    val: Option<&[Pair]>,
    threshold: &str,
) -> anyhow::Result<Evaluation> {
    let (t, source) = if threshold == "auto" {
        match val {
            Some(v) => (best_threshold(v)?, ThresholdSource::Validation),
            None => (best_threshold(test)?, ThresholdSource::Oracle),
        }
    } else {
        let t: f32 = threshold
            .parse()
            .with_context(|| format!("--threshold {threshold:?} is neither auto nor a number"))?;
        (t, ThresholdSource::Given)
    };
    Ok(evaluate(test, t, source))
}

#[derive(Debug, Serialize)]
pub struct MethodRow {
    pub method: String,
    #[serde(flatten)]
    pub eval: Evaluation,
    /// The scan-level answer of the model that made the heatmaps (the same
    /// for every method), from `--pred`'s `predictions.csv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// The masks of `tonno segment --threshold auto`: each scan's own
    /// threshold, gated by `predictions.csv` when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_rule: Option<AutoSummary>,
    /// Mean Dice at the oracle threshold (chosen on these test cases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oracle_dice: Option<f64>,
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
        .and_then(|t| tonno_core::eval::mean_dice(test, t))
}

/// Evaluates `test` with the per-scan rule, gated by `gate` (case -> called positive).
pub fn auto_summary(
    test: &[Pair],
    fraction: f64,
    gate: Option<&BTreeMap<String, bool>>,
) -> anyhow::Result<AutoSummary> {
    anyhow::ensure!(
        fraction > 0.0 && fraction < 1.0,
        "--auto-fraction {fraction}: must be between 0 and 1"
    );
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
) -> anyhow::Result<Option<(Classification, BTreeMap<String, bool>)>> {
    let path = pred.join("predictions.csv");
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    anyhow::ensure!(
        lines.next().map(str::trim) == Some("case,score,predicted"),
        "{}: not a predictions file (its header is not case,score,predicted)",
        path.display()
    );
    let mut rows = BTreeMap::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        anyhow::ensure!(
            f.len() == 3,
            "{} line {}: {} fields, expected case,score,predicted",
            path.display(),
            i + 2,
            f.len()
        );
        let score: f64 = f[1]
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .with_context(|| format!("{} line {}: score {:?}", path.display(), i + 2, f[1]))?;
        let predicted = match f[2] {
            "1" => Some(true),
            "0" => Some(false),
            "" => None,
            other => anyhow::bail!(
                "{} line {}: predicted label {other:?}, expected 1, 0 or nothing",
                path.display(),
                i + 2
            ),
        };
        rows.insert(f[0].to_string(), (score, predicted));
    }
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut predicted = Vec::new();
    for (case, mask) in truth {
        let &(score, p) = rows
            .get(case)
            .with_context(|| format!("{}: no row for case {case}", path.display()))?;
        let m = read_image(mask).with_context(|| format!("reading {}", mask.display()))?;
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
            auroc: tonno_core::metrics::auroc(&scores, &labels),
            accuracy: all.as_ref().map(|p| {
                p.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
            }),
            sensitivity: rate(true, positives),
            specificity: rate(false, negatives),
        },
        gate,
    )))
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.digits$}"))
}

/// The extra columns of the per-scan rule and the oracle Dice.
pub fn auto_columns(rows: &[MethodRow]) -> Vec<(&'static str, Vec<String>)> {
    let col = |f: &dyn Fn(&AutoSummary) -> String| {
        rows.iter()
            .map(|r| r.auto_rule.as_ref().map_or(String::new(), f))
            .collect::<Vec<String>>()
    };
    let gated = rows
        .iter()
        .any(|r| r.auto_rule.as_ref().is_some_and(|a| a.gated));
    vec![
        (
            if gated {
                "Dice (auto, gated)"
            } else {
                "Dice (auto)"
            },
            col(&|a| fmt(a.mean_dice, 3)),
        ),
        (
            "empty / median FP ml (auto)",
            col(&|a| {
                format!(
                    "{} / {}",
                    a.empty_predictions,
                    fmt(a.median_false_positive_ml, 2)
                )
            }),
        ),
        (
            "oracle Dice",
            rows.iter().map(|r| fmt(r.oracle_dice, 3)).collect(),
        ),
    ]
}

/// A markdown table of the methods' summaries.
pub fn table(rows: &[MethodRow], extra: &[(&str, Vec<String>)]) -> String {
    let mut s = String::from(
        "| method | threshold | Dice | HD95 (mm) | FP volume (ml) | detection F1 | voxel AUROC | voxel AP |",
    );
    for (h, _) in extra {
        s += &format!(" {h} |");
    }
    s += "\n|---|---|---|---|---|---|---|---|";
    for _ in extra {
        s += "---|";
    }
    s += "\n";
    for (i, r) in rows.iter().enumerate() {
        let e = &r.eval;
        let src = match e.threshold_source {
            ThresholdSource::Validation => "val",
            ThresholdSource::Oracle => "oracle",
            ThresholdSource::Given => "given",
            ThresholdSource::Auto => "auto",
        };
        s += &format!(
            "| {} | {:.3e} ({src}) | {} | {}{} | {} | {:.3} | {} | {} |",
            r.method,
            e.threshold,
            fmt(e.mean_dice, 3),
            fmt(e.mean_hd95_mm, 1),
            if e.empty_predictions > 0 {
                format!(" ({} empty)", e.empty_predictions)
            } else {
                String::new()
            },
            fmt(e.mean_false_positive_ml, 2),
            e.detection_f1,
            fmt(e.voxel_auroc, 3),
            fmt(e.voxel_average_precision, 3),
        );
        for (_, col) in extra {
            s += &format!(" {} |", col.get(i).map_or("", String::as_str));
        }
        s += "\n";
    }
    s
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cases = masks(&a.truth)?;
    let methods = if a.methods.is_empty() {
        methods_in(&a.pred, &cases)?
    } else {
        a.methods.clone()
    };
    anyhow::ensure!(
        !methods.is_empty(),
        "{}: no heatmaps named CASE_METHOD.nii.gz for the cases in {}",
        a.pred.display(),
        a.truth.display()
    );
    let (classified, gate) = match classification(&a.pred, &cases)? {
        Some((c, g)) => (Some(c), (!g.is_empty()).then_some(g)),
        None => (None, None),
    };
    let mut rows = Vec::new();
    for m in &methods {
        let test = pairs(&a.pred, &a.truth, m)?;
        let val = match (&a.val_pred, &a.val_truth) {
            (Some(p), Some(t)) => Some(pairs(p, t, m)?),
            _ => None,
        };
        rows.push(MethodRow {
            method: m.clone(),
            eval: evaluate_method(&test, val.as_deref(), &a.threshold)?,
            classification: classified.clone(),
            auto_rule: Some(auto_summary(
                &test,
                a.auto_fraction.unwrap_or_else(|| {
                    m.parse::<Method>()
                        .map_or(AUTO_FRACTION, |m| m.auto_fraction())
                }),
                gate.as_ref(),
            )?),
            oracle_dice: oracle_dice(&test),
        });
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        out!("{}", table(&rows, &auto_columns(&rows)));
        if rows
            .iter()
            .any(|r| r.eval.threshold_source == ThresholdSource::Oracle)
        {
            outln!(
                "\n(oracle: thresholds chosen on these test cases; pass --val-pred/--val-truth for honest ones)"
            );
        }
        outln!(
            "auto: each scan's threshold at {} of the way from its heatmap's median to its maximum{}",
            a.auto_fraction
                .map_or("the method's fraction".to_string(), |f| f.to_string()),
            if gate.is_some() {
                ", scans predictions.csv calls negative left empty"
            } else {
                ""
            }
        );
        if let Some(c) = &classified {
            outln!(
                "\nscan classification ({} scans, {} with a lesion; predictions.csv): AUROC {}, accuracy {}, sensitivity {}, specificity {}",
                c.cases,
                c.positives,
                fmt(c.auroc, 3),
                fmt(c.accuracy, 3),
                fmt(c.sensitivity, 3),
                fmt(c.specificity, 3)
            );
        }
        outln!(
            "Dice and HD95 (MONAI convention) over cases with a lesion, FP volume over cases without; AUROC and AP over all voxels."
        );
    }
    Ok(ExitCode::SUCCESS)
}
