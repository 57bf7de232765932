//! The volume-level answer: a scan's score and the decision threshold on it.
//!
//! A scan's score is the largest (or the mean, or the largest minus the
//! mean) logit of the encoder over a
//! fixed set of slices through its foreground: `directions` Fibonacci
//! directions x `slices` offsets, the set validation scores during training
//! ([`PreparedVolume::validation_planes`]). The threshold is chosen at the
//! end of training on the validation split's image-level labels (which a
//! user has; no mask is needed) and stored in `RUN/decision.json`, so that
//! `tonno segment` can say which scans hold a lesion and give the others an
//! empty mask.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tonno_core::geometry::sample_planes;
use tonno_core::sampler::PreparedVolume;

use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::infer;

/// How a volume's slice logits become one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// The largest slice logit: sensitive to a lesion seen in a few slices.
    #[default]
    Max,
    /// The mean slice logit.
    Mean,
    /// The largest slice logit minus the mean one: how far the most
    /// suspicious slice stands out from the rest of its own scan, which a
    /// property shared by all of a scan's slices does not move (the score of
    /// an encoder trained with the relative MIL objective).
    Gap,
}

impl Aggregate {
    /// The AUROC this aggregate selects on, chance (0.5) when undefined.
    pub(crate) fn pick(self, max: Option<f64>, mean: Option<f64>, gap: Option<f64>) -> f64 {
        self.auroc(max, mean, gap).unwrap_or(0.5)
    }

    /// Of the AUROCs by each aggregate, this one's.
    pub(crate) fn auroc(
        self,
        max: Option<f64>,
        mean: Option<f64>,
        gap: Option<f64>,
    ) -> Option<f64> {
        match self {
            Self::Max => max,
            Self::Mean => mean,
            Self::Gap => gap,
        }
    }
}

/// How a scan's score is computed from its encoder's slice logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRule {
    /// How the slice logits become the score.
    pub aggregate: Aggregate,
    /// The slice set: directions x offsets per direction.
    pub directions: usize,
    pub slices: usize,
}

/// The stored decision rule of a trained model (`RUN/decision.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub rule: ScoreRule,
    /// A scan is called positive when its score is above this (a logit).
    pub threshold: f64,
    /// What the threshold achieved on the validation split it was chosen on.
    pub val_cases: usize,
    pub val_auroc: Option<f64>,
    pub val_sensitivity: f64,
    pub val_specificity: f64,
}

/// A threshold and the sensitivity and specificity it gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Operating {
    pub threshold: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

/// The threshold with the largest Youden index (sensitivity plus
/// specificity, minus 1) on `scores` (positive above it): midway between two
/// consecutive distinct scores, or 1 below the lowest. Among equal indices the lowest
/// threshold wins, since a positive scan called negative loses its mask
/// while a negative one called positive only keeps a heatmap to threshold.
pub fn youden_threshold(scores: &[f64], labels: &[bool]) -> Result<Operating> {
    if scores.len() != labels.len() {
        return Err(Error::invalid(
            "decision threshold",
            format!("{} scores for {} labels", scores.len(), labels.len()),
        ));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::invalid(
            "decision threshold",
            format!("score {i} is {}", scores[i]),
        ));
    }
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::invalid(
            "decision threshold",
            format!("{pos} positive and {neg} negative validation scans; both labels are needed"),
        ));
    }
    let mut sorted: Vec<f64> = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let candidates = std::iter::once(sorted[0] - 1.0)
        .chain(sorted.windows(2).map(|w| 0.5 * (w[0] + w[1])))
        .chain(std::iter::once(sorted[sorted.len() - 1] + 1.0));
    let mut best: Option<(f64, Operating)> = None;
    for t in candidates {
        let tp = scores
            .iter()
            .zip(labels)
            .filter(|&(&s, &l)| l && s > t)
            .count();
        let tn = scores
            .iter()
            .zip(labels)
            .filter(|&(&s, &l)| !l && s <= t)
            .count();
        let op = Operating {
            threshold: t,
            sensitivity: tp as f64 / pos as f64,
            specificity: tn as f64 / neg as f64,
        };
        let j = op.sensitivity + op.specificity - 1.0;
        if best.is_none_or(|(b, _)| j > b + 1e-12) {
            best = Some((j, op));
        }
    }
    Ok(best.expect("at least two candidates").1)
}

/// The fixed slices of one volume, `(directions * slices, C, P, P)`.
pub fn fixed_slices(
    volume: &PreparedVolume,
    directions: usize,
    slices: usize,
    pixels: usize,
) -> Result<Vec<f32>> {
    let planes = volume.validation_planes(directions, slices, pixels)?;
    let mut out = vec![0.0f32; planes.len() * volume.volume.channels() * pixels * pixels];
    sample_planes(&volume.volume, &planes, volume.background, &mut out);
    Ok(out)
}

/// The largest and the mean of `logits`.
pub fn max_and_mean(logits: &[f32]) -> (f64, f64) {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let mean = logits.iter().map(|&x| x as f64).sum::<f64>() / logits.len().max(1) as f64;
    (max, mean)
}

impl Aggregate {
    /// "largest" or "mean".
    pub fn name(self) -> &'static str {
        match self {
            Self::Max => "largest",
            Self::Mean => "mean",
            Self::Gap => "largest-minus-mean",
        }
    }

    /// The value of `selection` in a training config.
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Max => "max",
            Self::Mean => "mean",
            Self::Gap => "gap",
        }
    }

    /// The score of one volume from its slice logits.
    pub fn of(self, logits: &[f32]) -> f64 {
        let (max, mean) = max_and_mean(logits);
        self.of_max_and_mean(max, mean)
    }

    /// The score of one volume from its largest and mean slice logit.
    pub fn of_max_and_mean(self, max: f64, mean: f64) -> f64 {
        match self {
            Self::Max => max,
            Self::Mean => mean,
            Self::Gap => max - mean,
        }
    }
}

impl ScoreRule {
    /// The score of `volume` by `encoder` (in inference mode).
    pub fn score(
        &self,
        encoder: &Encoder,
        device: &Device,
        volume: &PreparedVolume,
        pixels: usize,
        batch: usize,
    ) -> Result<f64> {
        let slices = fixed_slices(volume, self.directions, self.slices, pixels)?;
        let logits = infer::logits(
            encoder,
            device,
            &slices,
            volume.volume.channels(),
            pixels,
            batch,
        )?;
        let s = self.aggregate.of(&logits);
        if !s.is_finite() {
            return Err(Error::invalid(
                "volume score",
                format!(
                    "the {} slice logit of {} is {s}",
                    self.aggregate.name(),
                    volume.name
                ),
            ));
        }
        Ok(s)
    }
}

impl Decision {
    /// The file a run stores its decision rule in.
    pub const FILE: &'static str = "decision.json";

    /// Whether a scan of score `score` is called positive.
    pub fn positive(&self, score: f64) -> bool {
        score > self.threshold
    }

    /// Reads `path` (a run's `decision.json`).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Run {
            path: path.to_path_buf(),
            reason: if e.kind() == std::io::ErrorKind::NotFound {
                "no stored decision threshold (the run was trained before tonno \
                 stored one, or did not finish); retrain it, or pass --no-gate"
                    .into()
            } else {
                format!("cannot read the decision threshold: {e}")
            },
        })?;
        let d: Self = serde_json::from_str(&text).map_err(|e| Error::Run {
            path: path.to_path_buf(),
            reason: format!("not a tonno decision file: {e}"),
        })?;
        if !d.threshold.is_finite() || d.rule.directions == 0 || d.rule.slices == 0 {
            return Err(Error::Run {
                path: path.to_path_buf(),
                reason: format!(
                    "threshold {} on {} x {} slices is not usable",
                    d.threshold, d.rule.directions, d.rule.slices
                ),
            });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_scores_get_a_threshold_between_the_classes() {
        let scores = [-2.0, -1.5, -0.2, 0.3, 1.0, 4.0];
        let labels = [false, false, false, true, true, true];
        let op = youden_threshold(&scores, &labels).unwrap();
        assert!((op.threshold - 0.05).abs() < 1e-12, "{op:?}");
        assert_eq!((op.sensitivity, op.specificity), (1.0, 1.0));
    }

    #[test]
    fn overlapping_scores_get_the_best_youden_index_of_every_cut() {
        let mut rng = tonno_core::rng::Rng::new(5);
        for _ in 0..50 {
            let n = 3 + rng.below(20);
            let labels: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
            let scores: Vec<f64> = labels
                .iter()
                .map(|&l| rng.normal() + if l { 0.7 } else { 0.0 })
                .map(|s| (s * 4.0).round() / 4.0) // ties
                .collect();
            let op = youden_threshold(&scores, &labels).unwrap();
            let j = |t: f64| {
                let pos = labels.iter().filter(|&&l| l).count() as f64;
                let neg = labels.len() as f64 - pos;
                let tp = (0..n).filter(|&i| labels[i] && scores[i] > t).count() as f64;
                let tn = (0..n).filter(|&i| !labels[i] && scores[i] <= t).count() as f64;
                tp / pos + tn / neg - 1.0
            };
            let best = scores
                .iter()
                .map(|&t| j(t))
                .chain([j(f64::NEG_INFINITY)])
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(
                (j(op.threshold) - best).abs() < 1e-12,
                "{op:?} vs best index {best}"
            );
            assert!(
                (op.sensitivity + op.specificity - 1.0 - best).abs() < 1e-12,
                "reported {op:?}"
            );
        }
    }

    #[test]
    fn a_useless_score_passes_every_scan() {
        // Every cut has index 0: the lowest threshold, all called positive.
        let op = youden_threshold(&[1.0, 1.0], &[true, false]).unwrap();
        assert!(op.threshold < 1.0);
        assert_eq!(op.sensitivity, 1.0);
    }

    #[test]
    fn one_label_nan_and_length_mismatch_are_refused() {
        let e = youden_threshold(&[0.1, 0.2], &[true, true]).unwrap_err();
        assert!(e.to_string().contains("both labels"), "{e}");
        let e = youden_threshold(&[0.1, f64::NAN], &[true, false]).unwrap_err();
        assert!(e.to_string().contains("NaN"), "{e}");
        assert!(youden_threshold(&[0.1], &[true, false]).is_err());
    }

    #[test]
    fn a_missing_or_corrupt_decision_file_names_itself() {
        let dir = std::env::temp_dir().join(format!("tonno-decision-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(Decision::FILE);
        let e = Decision::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("decision.json") && e.contains("--no-gate"),
            "{e}"
        );
        std::fs::write(&path, "{\"threshold\": 1").unwrap();
        let e = Decision::read(&path).unwrap_err().to_string();
        assert!(e.contains("not a tonno decision file"), "{e}");
        let d = Decision {
            rule: ScoreRule {
                aggregate: Aggregate::Max,
                directions: 8,
                slices: 24,
            },
            threshold: 0.25,
            val_cases: 10,
            val_auroc: Some(0.9),
            val_sensitivity: 0.8,
            val_specificity: 1.0,
        };
        std::fs::write(&path, serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(Decision::read(&path).unwrap(), d);
        assert!(d.positive(0.3) && !d.positive(0.25));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
