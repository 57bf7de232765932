//! Evaluation of heatmaps against masks (docs/METHOD.md section 6): voxel Dice
//! and HD95 (mm, MONAI's convention) on cases with a lesion, false-positive
//! volume (ml) on cases without, lesion-level detection F1 (26-connected
//! components, a lesion detected when a predicted component overlaps it),
//! and threshold-free voxel AUROC and average precision pooled over cases.
//!
//! A threshold is chosen on a validation set by maximising the mean Dice of
//! its positive cases, then applied to the test set; without a validation
//! set it is chosen on the test set itself (the "oracle" threshold) and
//! reported as such. [`auto_threshold`] needs no mask at all: each scan's
//! own threshold from its heatmap (what `--threshold auto` does).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::{Detection, auroc, average_precision, detection, dice, hd95};
use crate::volume::Volume;

pub mod folder;

/// A heatmap and the mask it is judged against, for one case.
#[derive(Debug, Clone)]
pub struct Pair {
    pub case: String,
    pub heatmap: Volume,
    pub truth: Volume,
}

impl Pair {
    /// Checks that heatmap and mask share their grid.
    pub fn new(case: &str, heatmap: Volume, truth: Volume) -> Result<Self> {
        if heatmap.shape() != truth.shape() {
            return Err(Error::Shape {
                what: format!("heatmap and mask of case {case}"),
                expected: format!("{:?}", truth.shape()),
                got: format!("{:?}", heatmap.shape()),
            });
        }
        if heatmap
            .world_from_voxel()
            .max_abs_diff(truth.world_from_voxel())
            > 1e-3
        {
            return Err(Error::Shape {
                what: format!("affine of the heatmap and mask of case {case}"),
                expected: truth.world_from_voxel().to_string(),
                got: heatmap.world_from_voxel().to_string(),
            });
        }
        Ok(Self {
            case: case.to_string(),
            heatmap,
            truth,
        })
    }

    /// Voxels of the heatmap above `threshold`.
    pub fn predicted_mask(&self, threshold: f32) -> Vec<bool> {
        above(self.heatmap.channel(0), threshold).collect()
    }

    fn truth_mask(&self) -> Vec<bool> {
        self.truth.channel(0).iter().map(|&v| v > 0.0).collect()
    }

    /// Whether the mask has a lesion voxel.
    pub fn positive(&self) -> bool {
        self.truth.channel(0).iter().any(|&v| v > 0.0)
    }
}

/// Where a threshold came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdSource {
    /// Chosen on a separate validation set.
    Validation,
    /// Chosen on the test set itself: an optimistic, oracle figure.
    Oracle,
    /// Given by the user.
    Given,
    /// Each scan's own, by [`auto_threshold`] (the `threshold` field is then
    /// the rule's fraction), with the scan-level gate where one was given.
    Auto,
}

/// The share of the way from a heatmap's median to its maximum (over the
/// body) where [`auto_threshold`] puts a scan's threshold when nothing
/// better is known of the heatmap: the half maximum above the background
/// level, as a full width at half maximum. (`tonno segment` has a measured
/// fraction for each of its methods.)
pub const AUTO_FRACTION: f64 = 0.5;

/// A scan's own threshold, no mask needed: `median + fraction * (max -
/// median)` of its heatmap's values above the heatmap's minimum (`tonno
/// segment` sets every voxel outside the body to the minimum, so these are
/// the body's). The median is the level of the tissue without a lesion (a
/// lesion is a small share of the body), the maximum is the lesion's peak on a
/// scan that has one, so the mask is the region brighter than halfway
/// between: it adapts to each scan's scale and offset (a logit-scale
/// heatmap's level moves from scan to scan), and it is never empty when the
/// heatmap has a peak. A flat heatmap gives its maximum (an empty mask).
pub fn auto_threshold(heatmap: &[f32], fraction: f64) -> f32 {
    let low = heatmap
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::INFINITY, f32::min);
    let body: Vec<f32> = heatmap
        .iter()
        .copied()
        .filter(|&v| v.is_finite() && v > low)
        .collect();
    if body.is_empty() {
        return low;
    }
    let median = crate::normalize::quantile(&body, 0.5) as f64;
    let max = body.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    (median + fraction * (max - median)) as f32
}

/// The rule that turns a heatmap into a mask at any threshold, shared by
/// `tonno segment`'s masks, `tonno eval` and the demo's pictures: a voxel is
/// in the mask when its value is above the threshold, never at it, so a flat
/// heatmap at [`auto_threshold`]'s answer (its own level) gives an empty mask.
pub fn above(heatmap: &[f32], threshold: f32) -> impl Iterator<Item = bool> + '_ {
    heatmap.iter().map(move |&v| v > threshold)
}

/// One case's figures at the threshold.
#[derive(Debug, Clone, Serialize)]
pub struct CaseEval {
    pub case: String,
    pub positive: bool,
    pub dice: Option<f64>,
    pub hd95_mm: Option<f64>,
    pub false_positive_ml: Option<f64>,
    pub detection: Detection,
}

/// A method's figures over a set of cases.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub threshold: f64,
    pub threshold_source: ThresholdSource,
    pub positive_cases: usize,
    pub negative_cases: usize,
    pub mean_dice: Option<f64>,
    /// Mean over positive cases where the prediction is not empty.
    pub mean_hd95_mm: Option<f64>,
    /// Positive cases with an empty prediction (no HD95).
    pub empty_predictions: usize,
    pub mean_false_positive_ml: Option<f64>,
    pub detection: Detection,
    pub detection_f1: f64,
    pub voxel_auroc: Option<f64>,
    pub voxel_average_precision: Option<f64>,
    pub cases: Vec<CaseEval>,
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Mean Dice of the positive cases at `threshold`.
pub fn mean_dice(pairs: &[Pair], threshold: f32) -> Option<f64> {
    mean_dice_of(&positives_with_masks(pairs), threshold)
}

/// The positive cases with their truth masks, made once for many thresholds.
fn positives_with_masks(pairs: &[Pair]) -> Vec<(&Pair, Vec<bool>)> {
    pairs
        .iter()
        .filter(|p| p.positive())
        .map(|p| (p, p.truth_mask()))
        .collect()
}

fn mean_dice_of(positives: &[(&Pair, Vec<bool>)], threshold: f32) -> Option<f64> {
    mean(
        positives
            .iter()
            .map(|(p, truth)| dice(&p.predicted_mask(threshold), truth)),
    )
}

/// The threshold maximising the mean Dice of the positive cases, searched
/// over quantiles of the pooled heatmap values (from the median to the
/// 99.9999th percentile, denser in the tail where lesions are).
pub fn best_threshold(pairs: &[Pair]) -> Result<f32> {
    let mut values: Vec<f32> = pairs
        .iter()
        .flat_map(|p| p.heatmap.channel(0).iter().copied())
        .collect();
    if values.is_empty() || !pairs.iter().any(Pair::positive) {
        return Err(Error::invalid(
            "threshold",
            "choosing one needs at least one case with a lesion",
        ));
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let positives = positives_with_masks(pairs);
    let n = values.len();
    let mut best = (f64::NEG_INFINITY, values[n / 2]);
    for i in 0..=60 {
        // 1 - q from 0.5 down to 1e-6, log-spaced.
        let tail = 0.5 * (2e-6f64).powf(i as f64 / 60.0);
        let idx = (((1.0 - tail) * (n - 1) as f64).round() as usize).min(n - 1);
        let t = values[idx];
        if let Some(d) = mean_dice_of(&positives, t)
            && d > best.0
        {
            best = (d, t);
        }
    }
    Ok(best.1)
}

/// Figures of `pairs` at `threshold`.
pub fn evaluate(pairs: &[Pair], threshold: f32, source: ThresholdSource) -> Evaluation {
    evaluate_masks(pairs, threshold as f64, source, |p| {
        p.predicted_mask(threshold)
    })
}

/// Figures of `pairs` with each scan's own threshold ([`auto_threshold`] at
/// `fraction`); a scan that `gate` calls negative gets an empty mask.
pub fn evaluate_auto(
    pairs: &[Pair],
    fraction: f64,
    gate: Option<&dyn Fn(&str) -> bool>,
) -> Evaluation {
    evaluate_masks(pairs, fraction, ThresholdSource::Auto, |p| {
        if gate.is_some_and(|g| !g(&p.case)) {
            return vec![false; p.heatmap.channel(0).len()];
        }
        p.predicted_mask(auto_threshold(p.heatmap.channel(0), fraction))
    })
}

fn evaluate_masks(
    pairs: &[Pair],
    threshold: f64,
    source: ThresholdSource,
    predict: impl Fn(&Pair) -> Vec<bool>,
) -> Evaluation {
    let cases: Vec<CaseEval> = pairs
        .iter()
        .map(|p| {
            let truth = p.truth_mask();
            let pred = predict(p);
            let positive = p.positive();
            let s = p.truth.spacing_mm();
            // |det| of the affine, not the product of the spacings: the two
            // differ for the sheared grids the readers accept.
            let voxel_ml = p.truth.world_from_voxel().determinant().abs() / 1000.0;
            CaseEval {
                case: p.case.clone(),
                positive,
                dice: positive.then(|| dice(&pred, &truth)),
                hd95_mm: if positive {
                    hd95(&pred, &truth, p.truth.shape(), s)
                } else {
                    None
                },
                false_positive_ml: (!positive)
                    .then(|| pred.iter().filter(|&&x| x).count() as f64 * voxel_ml),
                detection: detection(&pred, &truth, p.truth.shape()),
            }
        })
        .collect();
    let mut det = Detection::default();
    for c in &cases {
        det.add(c.detection);
    }
    let scores: Vec<f64> = pairs
        .iter()
        .flat_map(|p| p.heatmap.channel(0).iter().map(|&v| v as f64))
        .collect();
    let labels: Vec<bool> = pairs.iter().flat_map(|p| p.truth_mask()).collect();
    Evaluation {
        threshold,
        threshold_source: source,
        positive_cases: cases.iter().filter(|c| c.positive).count(),
        negative_cases: cases.iter().filter(|c| !c.positive).count(),
        mean_dice: mean(cases.iter().filter_map(|c| c.dice)),
        mean_hd95_mm: mean(cases.iter().filter_map(|c| c.hd95_mm)),
        empty_predictions: cases
            .iter()
            .filter(|c| c.positive && c.hd95_mm.is_none())
            .count(),
        mean_false_positive_ml: mean(cases.iter().filter_map(|c| c.false_positive_ml)),
        detection: det,
        detection_f1: det.f1(),
        voxel_auroc: auroc(&scores, &labels),
        voxel_average_precision: average_precision(&scores, &labels),
        cases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::Affine;

    fn pair(case: &str, lesion: bool, offset: f32) -> Pair {
        let truth = Volume::from_fn([10, 10, 10], Affine::identity(), |i, j, k| {
            (lesion && (3..6).contains(&i) && (3..6).contains(&j) && (3..6).contains(&k)) as u8
                as f32
        })
        .unwrap();
        let heat = Volume::from_fn([10, 10, 10], Affine::identity(), |i, j, k| {
            let d2 = (i as f32 - 4.0).powi(2) + (j as f32 - 4.0).powi(2) + (k as f32 - 4.0).powi(2);
            (-d2 / 4.0).exp() * if lesion { 1.0 } else { 0.3 } + offset
        })
        .unwrap();
        Pair::new(case, heat, truth).unwrap()
    }

    #[test]
    fn the_false_positive_volume_of_a_sheared_grid_is_its_affines_determinant() {
        // Columns (2,0,0), (1,2,0), (0,0,3): spacings 2, sqrt 5, 3 mm, but
        // each voxel holds 2 * 2 * 3 = 12 mm^3.
        let a = Affine::from_columns(
            [[2.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]],
            [0.0; 3],
        );
        let truth = Volume::from_fn([4, 4, 4], a, |_, _, _| 0.0).unwrap();
        let heat = Volume::from_fn([4, 4, 4], a, |i, _, _| (i == 0) as u8 as f32).unwrap();
        let pairs = vec![Pair::new("n", heat, truth).unwrap()];
        let e = evaluate(&pairs, 0.5, ThresholdSource::Oracle);
        let ml = e.mean_false_positive_ml.unwrap();
        assert!((ml - 16.0 * 12.0 / 1000.0).abs() < 1e-9, "{ml} ml");
    }

    #[test]
    fn a_good_threshold_separates_the_blob_and_negatives_stay_clean() {
        let pairs = vec![
            pair("a", true, 0.0),
            pair("b", true, 0.01),
            pair("n", false, 0.0),
        ];
        let t = best_threshold(&pairs).unwrap();
        let e = evaluate(&pairs, t, ThresholdSource::Oracle);
        assert!(e.mean_dice.unwrap() > 0.6, "{e:?}");
        assert_eq!(e.mean_false_positive_ml, Some(0.0));
        assert_eq!(e.detection.true_positives, 2);
        assert!(e.voxel_auroc.unwrap() > 0.9);
        assert_eq!((e.positive_cases, e.negative_cases), (2, 1));
    }

    #[test]
    fn the_auto_threshold_returns_one_clear_blob_whatever_the_scale_and_offset() {
        let d2 = |idx: usize| {
            let (i, j, k) = (idx % 10, (idx / 10) % 10, idx / 100);
            (i as f32 - 4.0).powi(2) + (j as f32 - 4.0).powi(2) + (k as f32 - 4.0).powi(2)
        };
        // Multiples of 1/1024, so that the affine maps below are exact in f32.
        let base: Vec<f32> = pair("a", true, 0.0)
            .heatmap
            .data()
            .iter()
            .map(|&v| (v * 1024.0).round() / 1024.0)
            .collect();
        let blob_of = |heat: &[f32]| -> Vec<bool> {
            let t = auto_threshold(heat, AUTO_FRACTION);
            heat.iter().map(|&v| v > t).collect()
        };
        let blob = blob_of(&base);
        // The blob is a ball around the peak, within the half maximum.
        assert!(blob[4 + 10 * (4 + 10 * 4)], "the peak is in the mask");
        let inside = (0..1000)
            .filter(|&i| blob[i])
            .map(d2)
            .fold(0.0f32, f32::max);
        let outside = (0..1000)
            .filter(|&i| !blob[i])
            .map(d2)
            .fold(f32::INFINITY, f32::min);
        assert!(inside < outside, "not a ball: {inside} vs {outside}");
        assert!((0..1000).filter(|&i| blob[i]).all(|i| base[i] > 0.5));
        for (scale, offset) in [(4.0f32, -8.0f32), (0.25, 3.0)] {
            let heat: Vec<f32> = base.iter().map(|&v| v * scale + offset).collect();
            assert_eq!(blob_of(&heat), blob, "scale {scale}, offset {offset}");
        }
    }

    #[test]
    fn the_auto_threshold_ignores_the_area_outside_the_body_and_a_flat_map_is_empty() {
        // Outside the body (set to the minimum) does not pull the median.
        let mut heat = vec![-50.0f32; 1000];
        for (i, h) in heat.iter_mut().enumerate().take(500) {
            *h = if i < 10 { 5.0 } else { 1.0 };
        }
        let t = auto_threshold(&heat, 0.5);
        assert!((t - 3.0).abs() < 1e-6, "{t}");
        assert_eq!(heat.iter().filter(|&&v| v > t).count(), 10);
        let flat = vec![2.0f32; 100];
        assert!(!flat.iter().any(|&v| v > auto_threshold(&flat, 0.5)));
    }

    #[test]
    fn the_gate_empties_the_auto_masks_of_scans_called_negative() {
        let pairs = vec![pair("a", true, 0.0), pair("n", false, 0.0)];
        let open = evaluate_auto(&pairs, AUTO_FRACTION, None);
        assert!(open.mean_dice.unwrap() > 0.3, "{open:?}");
        assert!(open.mean_false_positive_ml.unwrap() > 0.0);
        let gate = |case: &str| case == "a";
        let gated = evaluate_auto(&pairs, AUTO_FRACTION, Some(&gate));
        assert_eq!(gated.mean_false_positive_ml, Some(0.0));
        assert_eq!(gated.mean_dice, open.mean_dice);
        assert_eq!(gated.threshold_source, ThresholdSource::Auto);
    }

    #[test]
    fn mismatched_grids_are_an_error_naming_the_case() {
        let a = pair("a", true, 0.0);
        let other = Volume::filled([9, 10, 10], Affine::identity(), 0.0).unwrap();
        let e = Pair::new("case_007", other, a.truth)
            .unwrap_err()
            .to_string();
        assert!(e.contains("case_007"), "{e}");
    }
}
