//! One scan through segmentation, as `tonno segment`, the demo and the
//! benchmarks run it: read, score (with a trained model and its decision
//! threshold), every method's heatmap restricted to the body, masks, and
//! each output written whole under a temporary name and renamed
//! (`CASE_METHOD.nii.gz`, `CASE_METHOD_mask.nii.gz`, float32 and uint8 on
//! the input's grid and affine).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tonno_core::eval::{above, auto_threshold};
use tonno_core::geometry::Ball;
use tonno_core::io::{DataType, case_name, read_image_series, write_image};
use tonno_core::normalize::{BODY_MARGIN_VOXELS, body_mask};
use tonno_core::sampler::{PreparedVolume, SamplingConfig};
use tonno_core::volume::Volume;

use crate::decision::{Decision, ScoreRule};
use crate::error::{Error, Result};
use crate::methods::{Heatmap, Method, SegmentConfig, SliceModel, Timings, segment};

/// How a heatmap becomes a mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaskThreshold {
    /// [`auto_threshold`] of each heatmap.
    Auto,
    Value(f32),
}

/// What became of one scan.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub input: PathBuf,
    /// The scan's score (a logit) by the run's score rule, with a trained model.
    pub score: Option<f64>,
    /// Whether the run's decision threshold calls the scan positive.
    pub predicted: Option<bool>,
    /// Whether its masks were emptied by the gate.
    pub gated: bool,
    /// Whether its outputs were already there (`--skip-existing`).
    pub skipped: bool,
    pub outputs: Vec<PathBuf>,
    pub seconds: f64,
    pub timings: Timings,
}

/// What to do with each input.
#[derive(Debug)]
pub struct Job<'a> {
    pub model: &'a SliceModel<'a>,
    /// How the model's training slices were made.
    pub sampling: &'a SamplingConfig,
    pub methods: &'a [Method],
    pub threshold: Option<MaskThreshold>,
    /// The fraction of [`MaskThreshold::Auto`] (`None`: each method's own).
    pub auto_fraction: Option<f64>,
    pub force: bool,
    /// Keep a case whose outputs are all there; redo one with some missing.
    pub skip_existing: bool,
    /// The exact "sum" encoder: raw intensities, zero outside, the covering ball.
    pub sum: bool,
    /// How a scan's score is computed (a trained model only).
    pub rule: Option<&'a ScoreRule>,
    /// The run's decision threshold, when it has one.
    pub decision: Option<&'a Decision>,
    /// Empty the masks of scans the decision calls negative.
    pub gate: bool,
    /// Restrict every heatmap to the body ([`restrict_to_body`]).
    pub body_mask: bool,
    /// The DICOM series to read when an input folder holds several.
    pub series: Option<&'a str>,
}

/// Sets `heatmap` to its lowest value wherever `body` is false: streaks and
/// noise in the air around the scan cannot become mask voxels, whatever the
/// threshold (a logit-scale heatmap can be negative, so 0 would not do).
pub fn restrict_to_body(heatmap: &mut [f32], body: &[bool]) {
    let low = heatmap
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::INFINITY, f32::min);
    if low.is_finite() {
        for (h, &b) in heatmap.iter_mut().zip(body) {
            if !b {
                *h = low;
            }
        }
    }
}

/// The mask of `heatmap > threshold` (empty when the gate closed it).
fn mask_of(
    h: &Heatmap,
    threshold: MaskThreshold,
    auto_fraction: Option<f64>,
    gated: bool,
) -> Result<Volume> {
    let t = match threshold {
        MaskThreshold::Value(t) => t,
        MaskThreshold::Auto => auto_threshold(
            h.volume.data(),
            auto_fraction.unwrap_or(h.method.auto_fraction()),
        ),
    };
    let data = above(h.volume.data(), t).map(|inside| f32::from(u8::from(!gated && inside)));
    Ok(h.volume.same_grid(data.collect())?)
}

/// Heatmaps (and masks) of one input written to `out` as CASE_METHOD.nii.gz.
pub fn segment_file(
    file: &Path,
    out: &Path,
    job: &Job<'_>,
    config: &SegmentConfig,
) -> Result<CaseResult> {
    let start = std::time::Instant::now();
    let case = case_name(file);
    let out_path = |m: Method, mask: bool| {
        out.join(format!(
            "{case}_{}{}.nii.gz",
            m.name(),
            if mask { "_mask" } else { "" }
        ))
    };
    let expected: Vec<PathBuf> = job
        .methods
        .iter()
        .flat_map(|&m| {
            let mask = job.threshold.map(|_| out_path(m, true));
            std::iter::once(out_path(m, false)).chain(mask)
        })
        .collect();
    let there: Vec<&PathBuf> = expected.iter().filter(|p| p.exists()).collect();
    if let Some(p) = there.first()
        && !job.force
        && !job.skip_existing
    {
        return Err(Error::Run {
            path: p.to_path_buf(),
            reason: "already exists; pass --skip-existing to continue the folder or --force to replace it".into(),
        });
    }
    let skipped = job.skip_existing && there.len() == expected.len();
    // An incomplete case of an earlier run is redone whole.
    let overwrite = job.force || job.skip_existing;
    let img = read_image_series(file, job.series)?;
    let about = |what: &str, e: &dyn std::fmt::Display| Error::Data {
        path: file.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    // Once per scan: the heatmaps are cut to it, and the Hessian channels
    // (when the model has them) are zero outside it.
    let body = job
        .body_mask
        .then(|| body_mask(&img.volume, BODY_MARGIN_VOXELS));
    let mut prepared =
        PreparedVolume::with_body_mask(&case, &img.volume, None, job.sampling, body.as_deref())
            .map_err(|e| about("preparing", &e))?;
    if let SliceModel::Net { encoder, .. } = job.model {
        let (got, want) = (prepared.volume.channels(), encoder.in_channels());
        if got != want {
            let hessian = if job.sampling.hessian_sigma_mm.is_some() {
                " with the model's two Hessian channels per image channel"
            } else {
                ""
            };
            return Err(Error::Data {
                path: file.to_path_buf(),
                reason: format!(
                    "has {} channel(s), which make {got} slice channel(s){hessian}, but the \
                     model was trained on {want}: give it scans with the training data's channels",
                    img.volume.channels()
                ),
            });
        }
    }
    if job.sum {
        prepared.background = 0.0;
        prepared.ball = Ball::covering(&img.volume);
    }
    let score = match (job.rule, job.model) {
        (
            Some(rule),
            SliceModel::Net {
                encoder,
                device,
                batch,
            },
        ) => Some(
            rule.score(encoder, device, &prepared, job.sampling.slice_size, *batch)
                .map_err(|e| about("scoring", &e))?,
        ),
        _ => None,
    };
    let predicted = score.zip(job.decision).map(|(s, d)| d.positive(s));
    let gated = job.gate && predicted == Some(false);
    let (outputs, timings) = if skipped {
        (expected, Timings::default())
    } else {
        let (heatmaps, timings) = segment(&prepared, job.model, job.methods, config)
            .map_err(|e| about("segmenting", &e))?;
        let mut outputs = Vec::new();
        for mut h in heatmaps {
            if let Some(body) = &body {
                restrict_to_body(h.volume.data_mut(), body);
            }
            let p = out_path(h.method, false);
            write_image(&p, &h.volume, DataType::F32, Some(&img.info), overwrite)?;
            outputs.push(p);
            if let Some(threshold) = job.threshold {
                let mask = mask_of(&h, threshold, job.auto_fraction, gated)?;
                let p = out_path(h.method, true);
                write_image(&p, &mask, DataType::U8, Some(&img.info), overwrite)?;
                outputs.push(p);
            }
        }
        (outputs, timings)
    };
    Ok(CaseResult {
        case,
        input: file.to_path_buf(),
        score,
        predicted,
        gated,
        skipped,
        outputs,
        seconds: start.elapsed().as_secs_f64(),
        timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_the_body_every_heatmap_takes_its_lowest_value() {
        let mut h = vec![3.0, -2.0, 7.0, 0.5, -9.0];
        let body = [true, true, false, true, false];
        restrict_to_body(&mut h, &body);
        assert_eq!(h, [3.0, -2.0, -9.0, 0.5, -9.0]);
        // A mask at any threshold above the minimum keeps none of the air.
        assert!(h.iter().zip(&body).all(|(&v, &b)| b || v <= -9.0));
    }
}
