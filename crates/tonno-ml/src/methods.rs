//! 3D heatmaps from a slice encoder, by every method of docs/METHOD.md
//! sections 3 and 5, on the input's own grid:
//!
//! - `tonno`: per-slice logits over K directions x S offsets form a sinogram,
//!   filtered by `-d^2/dt^2` and backprojected, `H = -1/(2 pi K) sum_k g_k''`.
//! - `gradcam2d`, `layercam2d`: a 2D CAM of every slice along the volume's own
//!   slice axis (its third voxel axis), stacked (the paper's baseline).
//! - `averaged-gradcam`, `averaged-layercam`: each direction's stack of CAMs
//!   resampled onto the grid and averaged over the K directions.
//! - `tomographic-gradcam`, `tomographic-layercam`: the same stacks filtered
//!   along t with ToNNO's filter, then summed with ToNNO's `-1/(2 pi K)`.
//!
//! All tomographic methods share one pass over the directions: each
//! direction's stack is extracted once and goes through the encoder once
//! (the CAM's forward pass also gives the logits), and memory stays at one
//! chunk of stacks plus one volume per method.

use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use tonno_core::affine::{Vec3, cross};
use tonno_core::geometry::{Ball, Frame, Plane, TomoGeometry, extract_stack};
use tonno_core::radon::{
    Filter, Reconstruction, Sinogram, Stack, backproject_stack, filter_stack, inverse_scale,
    reconstruct_as,
};
use tonno_core::sampler::PreparedVolume;
use tonno_core::volume::Volume;

use crate::cam::{CamKind, cams};
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::infer;

/// A segmentation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Tonno,
    Gradcam2d,
    Layercam2d,
    AveragedGradcam,
    AveragedLayercam,
    TomographicGradcam,
    TomographicLayercam,
}

impl Method {
    /// Every method, in the paper's table order.
    pub const ALL: [Method; 7] = [
        Method::Gradcam2d,
        Method::Layercam2d,
        Method::Tonno,
        Method::AveragedGradcam,
        Method::AveragedLayercam,
        Method::TomographicGradcam,
        Method::TomographicLayercam,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tonno => "tonno",
            Self::Gradcam2d => "gradcam2d",
            Self::Layercam2d => "layercam2d",
            Self::AveragedGradcam => "averaged-gradcam",
            Self::AveragedLayercam => "averaged-layercam",
            Self::TomographicGradcam => "tomographic-gradcam",
            Self::TomographicLayercam => "tomographic-layercam",
        }
    }

    /// The CAM a method is built on, if any.
    pub fn cam(self) -> Option<CamKind> {
        match self {
            Self::Tonno => None,
            Self::Gradcam2d | Self::AveragedGradcam | Self::TomographicGradcam => {
                Some(CamKind::GradCam)
            }
            Self::Layercam2d | Self::AveragedLayercam | Self::TomographicLayercam => {
                Some(CamKind::LayerCam)
            }
        }
    }

    fn is_2d(self) -> bool {
        matches!(self, Self::Gradcam2d | Self::Layercam2d)
    }

    /// The default fraction of `--threshold auto`
    /// ([`tonno_core::eval::auto_threshold`]) for this method's heatmaps.
    /// Filtered heatmaps (ToNNO, tomographic CAMs: a second derivative) have a
    /// peak narrower than the lesion, ringed by negative lobes, so the lesion's
    /// edge lies low on it; averaged CAMs are blurred by the backprojection,
    /// with wide tails, so it lies high. Measured on the real-anatomy
    /// benchmark's validation subjects (the best mean Dice over fractions 0.1
    /// to 0.8 of 16 validation scans), never on its test subjects.
    pub fn auto_fraction(self) -> f64 {
        match self {
            Self::Tonno => 0.3,
            Self::TomographicGradcam => 0.25,
            Self::TomographicLayercam => 0.2,
            Self::AveragedGradcam => 0.7,
            Self::AveragedLayercam => 0.6,
            Self::Gradcam2d => 0.6,
            Self::Layercam2d => 0.5,
        }
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "method",
                    format!(
                        "{s:?}; use one of {}",
                        Method::ALL.map(|m| m.name()).join(", ")
                    ),
                )
            })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the ToNNO profile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProfileValue {
    /// The logit (the paper's choice).
    #[default]
    Logit,
    /// The sigmoid of the logit.
    Probability,
}

/// The slice "encoder".
#[derive(Debug)]
pub enum SliceModel<'a> {
    /// A trained network (in validation mode) on its device.
    Net {
        encoder: &'a Encoder,
        device: Device,
        /// Slices per forward pass.
        batch: usize,
    },
    /// The exact Radon transform: a slice's pixel sum times the pixel area.
    /// ToNNO with it reconstructs the input itself.
    Sum,
}

/// Options of [`segment`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentConfig {
    pub directions: usize,
    pub slices: usize,
    /// Pixels per slice side; must be the encoder's training size.
    pub pixels: usize,
    pub filter: Filter,
    /// ToNNO's reconstruction (the tomographic CAMs always backproject).
    #[serde(default)]
    pub reconstruction: Reconstruction,
    pub profile: ProfileValue,
    /// Ball centre (world mm) and radius (mm); default: the model's ball fit.
    pub center_mm: Option<Vec3>,
    pub radius_mm: Option<f64>,
    /// In-plane rotation of every slice frame, in radians.
    pub in_plane_angle: f64,
    /// Feature stage for GradCAM (default: the last) and LayerCAM (default: one before).
    pub gradcam_stage: Option<usize>,
    pub layercam_stage: Option<usize>,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            directions: 128,
            slices: 64,
            pixels: 64,
            filter: Filter::default(),
            reconstruction: Reconstruction::Fbp,
            profile: ProfileValue::Logit,
            center_mm: None,
            radius_mm: None,
            in_plane_angle: 0.0,
            gradcam_stage: None,
            layercam_stage: None,
        }
    }
}

/// Where the time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub slicing_s: f64,
    pub encoder_s: f64,
    pub reconstruction_s: f64,
}

/// One method's heatmap on the input's grid.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub method: Method,
    pub volume: Volume,
}

/// Heatmaps of `methods` for `prepared` (the normalised volume and its ball),
/// on `prepared`'s grid. See the module docs.
pub fn segment(
    prepared: &PreparedVolume,
    model: &SliceModel<'_>,
    methods: &[Method],
    config: &SegmentConfig,
) -> Result<(Vec<Heatmap>, Timings)> {
    let mut methods: Vec<Method> = methods.to_vec();
    methods.sort();
    methods.dedup();
    if methods.is_empty() {
        return Err(Error::invalid("methods", "none asked for"));
    }
    if let (SliceModel::Sum, Some(m)) = (model, methods.iter().find(|m| m.cam().is_some())) {
        return Err(Error::invalid(
            "method",
            format!("{m} needs a trained network; the sum encoder only supports tonno"),
        ));
    }
    config.filter.validate()?;
    let mut ball = prepared.ball;
    if let Some(c) = config.center_mm {
        ball.center_mm = c;
    }
    if let Some(r) = config.radius_mm {
        ball.radius_mm = r;
    }
    let geometry = Arc::new(TomoGeometry::fibonacci(
        ball,
        config.directions,
        config.slices,
        config.pixels,
        config.in_plane_angle,
    )?);
    let stages = match model {
        SliceModel::Net { encoder, .. } => (
            config.gradcam_stage.unwrap_or(encoder.stages()),
            config
                .layercam_stage
                .unwrap_or(encoder.default_layercam_stage()),
        ),
        SliceModel::Sum => (0, 0),
    };
    let mut timings = Timings::default();
    let mut out = Vec::new();
    let tomographic: Vec<Method> = methods.iter().copied().filter(|m| !m.is_2d()).collect();
    if !tomographic.is_empty() {
        out.extend(tomographic_methods(
            prepared,
            model,
            &tomographic,
            config,
            &geometry,
            stages,
            &mut timings,
        )?);
    }
    let flat: Vec<Method> = methods.iter().copied().filter(|m| m.is_2d()).collect();
    if !flat.is_empty() {
        out.extend(slice_axis_methods(
            prepared,
            model,
            &flat,
            config,
            ball,
            stages,
            &mut timings,
        )?);
    }
    Ok((out, timings))
}

/// The CAM kinds a set of methods needs, with their stages.
fn cam_kinds(methods: &[Method], stages: (usize, usize)) -> Vec<(CamKind, usize)> {
    let mut kinds = Vec::new();
    for m in methods {
        if let Some(k) = m.cam() {
            let stage = if k == CamKind::GradCam {
                stages.0
            } else {
                stages.1
            };
            if !kinds.contains(&(k, stage)) {
                kinds.push((k, stage));
            }
        }
    }
    kinds
}

/// Slices (`S x C x P x P`) of direction `k`.
fn direction_stack(
    prepared: &PreparedVolume,
    geometry: &TomoGeometry,
    k: usize,
    background: f32,
) -> Vec<f32> {
    let per = prepared.volume.channels() * geometry.pixels * geometry.pixels;
    let mut stack = vec![0.0f32; geometry.slices * per];
    extract_stack(&prepared.volume, geometry, k, background, &mut stack);
    stack
}

fn run_model(
    model: &SliceModel<'_>,
    slices: &[f32],
    channels: usize,
    p: usize,
    area: f64,
    kinds: &[(CamKind, usize)],
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    match model {
        SliceModel::Sum => {
            let per = channels * p * p;
            let sums = slices
                .chunks_exact(per)
                .map(|s| (s[..p * p].iter().map(|&v| v as f64).sum::<f64>() * area) as f32)
                .collect();
            Ok((sums, Vec::new()))
        }
        SliceModel::Net {
            encoder,
            device,
            batch,
        } => {
            if kinds.is_empty() {
                return Ok((
                    infer::logits(encoder, device, slices, channels, p, *batch)?,
                    Vec::new(),
                ));
            }
            let per = channels * p * p;
            let mut logits = Vec::new();
            let mut maps: Vec<Vec<f32>> = vec![Vec::new(); kinds.len()];
            for chunk in slices.chunks(per * (*batch).max(1)) {
                let b = cams(encoder, device, chunk, channels, p, kinds)?;
                logits.extend(b.logits);
                for (m, bm) in maps.iter_mut().zip(b.maps) {
                    m.extend(bm);
                }
            }
            Ok((logits, maps))
        }
    }
}

fn tomographic_methods(
    prepared: &PreparedVolume,
    model: &SliceModel<'_>,
    methods: &[Method],
    config: &SegmentConfig,
    geometry: &Arc<TomoGeometry>,
    stages: (usize, usize),
    timings: &mut Timings,
) -> Result<Vec<Heatmap>> {
    let grid = prepared.volume.grid();
    let k_dirs = geometry.directions();
    let (s, p, c) = (geometry.slices, geometry.pixels, prepared.volume.channels());
    let kinds = cam_kinds(methods, stages);
    let area = geometry.pixel_mm() * geometry.pixel_mm();
    let background = if matches!(model, SliceModel::Sum) {
        0.0
    } else {
        prepared.background
    };
    let mut sinogram = vec![0.0f32; k_dirs * s];
    // One accumulator per (method) needing stack backprojection.
    let stack_methods: Vec<Method> = methods
        .iter()
        .copied()
        .filter(|m| m.cam().is_some())
        .collect();
    let mut acc: Vec<Vec<f32>> = vec![vec![0.0f32; grid.voxels()]; stack_methods.len()];
    for k in 0..k_dirs {
        let t = Instant::now();
        let stack = direction_stack(prepared, geometry, k, background);
        timings.slicing_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (logits, maps) = run_model(model, &stack, c, p, area, &kinds)?;
        timings.encoder_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (j, l) in logits.iter().enumerate() {
            sinogram[k * s + j] = match config.profile {
                ProfileValue::Logit => *l,
                ProfileValue::Probability => 1.0 / (1.0 + (-l).exp()),
            };
        }
        for (m, a) in stack_methods.iter().zip(acc.iter_mut()) {
            let kind = m.cam().expect("stack methods have a CAM");
            let idx = kinds
                .iter()
                .position(|(kk, _)| *kk == kind)
                .expect("kind requested");
            let cam_stack = &maps[idx];
            let tomographic = matches!(m, Method::TomographicGradcam | Method::TomographicLayercam);
            if tomographic {
                let filtered = filter_stack(geometry, &config.filter, cam_stack)?;
                backproject_stack(
                    geometry,
                    &[Stack {
                        direction: k,
                        values: &filtered,
                    }],
                    &grid,
                    inverse_scale(k_dirs),
                    a,
                );
            } else {
                backproject_stack(
                    geometry,
                    &[Stack {
                        direction: k,
                        values: cam_stack,
                    }],
                    &grid,
                    1.0 / k_dirs as f32,
                    a,
                );
            }
        }
        timings.reconstruction_s += t.elapsed().as_secs_f64();
    }
    let mut out = Vec::new();
    let t = Instant::now();
    if methods.contains(&Method::Tonno) {
        let sino = Sinogram::new(geometry.clone(), sinogram)?;
        let h = reconstruct_as(&sino, &config.filter, &config.reconstruction, &grid)?;
        out.push(Heatmap {
            method: Method::Tonno,
            volume: prepared.volume.same_grid(h)?,
        });
    }
    for (m, a) in stack_methods.into_iter().zip(acc) {
        out.push(Heatmap {
            method: m,
            volume: prepared.volume.same_grid(a)?,
        });
    }
    timings.reconstruction_s += t.elapsed().as_secs_f64();
    Ok(out)
}

/// The 2D baselines: slices along the volume's third voxel axis through
/// each voxel plane, `P x P` pixels over the ball's diameter (as in
/// training), each slice's CAM resampled back onto its voxels.
fn slice_axis_methods(
    prepared: &PreparedVolume,
    model: &SliceModel<'_>,
    methods: &[Method],
    config: &SegmentConfig,
    ball: Ball,
    stages: (usize, usize),
    timings: &mut Timings,
) -> Result<Vec<Heatmap>> {
    let v = &prepared.volume;
    let [nx, ny, nz] = v.shape();
    let a = v.world_from_voxel();
    let (p, c) = (config.pixels, v.channels());
    let kinds = cam_kinds(methods, stages);
    // Frame: u along voxel axis 0, n normal to the (0, 1) voxel plane.
    let u0 = a.column(0);
    let n = cross(u0, a.column(1));
    let frame = Frame::from_normal(n, 0.0);
    let unit = |x: Vec3| {
        let l = (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
        [x[0] / l, x[1] / l, x[2] / l]
    };
    let u = unit(u0);
    let vv = cross(frame.n, u);
    let frame = Frame {
        u,
        v: vv,
        n: frame.n,
    };
    let rho = ball.radius_mm;
    let step = 2.0 * rho / (p - 1) as f64;
    let mut maps_vol: Vec<Vec<f32>> = vec![vec![0.0f32; v.voxels()]; methods.len()];
    let per = c * p * p;
    for k in 0..nz {
        // The plane of voxel layer k, centred on the ball's projection onto it.
        let on_plane = v.voxel_to_world([0.0, 0.0, k as f64]);
        let d = [0, 1, 2].map(|i| ball.center_mm[i] - on_plane[i]);
        let off = d[0] * frame.n[0] + d[1] * frame.n[1] + d[2] * frame.n[2];
        let centre = [0, 1, 2].map(|i| ball.center_mm[i] - off * frame.n[i]);
        let plane = Plane::centered(centre, &frame, 0.0, rho, p);
        let t = Instant::now();
        let mut slice = vec![0.0f32; per];
        for ch in 0..c {
            tonno_core::geometry::sample_plane(
                v,
                ch,
                &plane,
                prepared.background,
                &mut slice[ch * p * p..(ch + 1) * p * p],
            );
        }
        timings.slicing_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (_, maps) = run_model(model, &slice, c, p, step * step, &kinds)?;
        timings.encoder_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (mi, m) in methods.iter().enumerate() {
            let idx = kinds
                .iter()
                .position(|(kk, _)| Some(*kk) == m.cam())
                .expect("kind requested");
            let map = &maps[idx];
            for j in 0..ny {
                for i in 0..nx {
                    let w = v.voxel_to_world([i as f64, j as f64, k as f64]);
                    let rel = [0, 1, 2].map(|q| w[q] - plane.origin[q]);
                    let ai =
                        (rel[0] * frame.u[0] + rel[1] * frame.u[1] + rel[2] * frame.u[2]) / step;
                    let bi =
                        (rel[0] * frame.v[0] + rel[1] * frame.v[1] + rel[2] * frame.v[2]) / step;
                    maps_vol[mi][v.index(i, j, k, 0)] = bilinear(map, p, ai, bi);
                }
            }
        }
        timings.reconstruction_s += t.elapsed().as_secs_f64();
    }
    methods
        .iter()
        .zip(maps_vol)
        .map(|(m, data)| {
            Ok(Heatmap {
                method: *m,
                volume: v.same_grid(data)?,
            })
        })
        .collect()
}

/// Bilinear lookup in a `p x p` map (`[b][a]`), 0 outside.
fn bilinear(map: &[f32], p: usize, a: f64, b: f64) -> f32 {
    if !(a > -1.0 && b > -1.0 && a < p as f64 && b < p as f64) {
        return 0.0;
    }
    let (a0, b0) = (a.floor(), b.floor());
    let (fa, fb) = ((a - a0) as f32, (b - b0) as f32);
    let at = |aa: f64, bb: f64| -> f32 {
        if aa < 0.0 || bb < 0.0 || aa >= p as f64 || bb >= p as f64 {
            0.0
        } else {
            map[bb as usize * p + aa as usize]
        }
    };
    let top = at(a0, b0) * (1.0 - fa) + at(a0 + 1.0, b0) * fa;
    let bot = at(a0, b0 + 1.0) * (1.0 - fa) + at(a0 + 1.0, b0 + 1.0) * fa;
    top * (1.0 - fb) + bot * fb
}
