//! Training slices (docs/METHOD.md section 4): a random direction on the sphere,
//! a random in-plane rotation and a random offset inside the ball, `P x P`
//! pixels covering the ball's diameter, labelled with their volume's label,
//! with intensity augmentation. Batches are balanced between labels and
//! drawn from `Rng::fork(seed, step)`, so a step's batch is the same
//! whatever the thread count and whether the run was resumed.
//!
//! Offsets are drawn where a slice cuts the foreground (the inner
//! `offset_span` of the foreground's extent along the slice normal), not
//! anywhere in the ball: a slice that grazes the head or misses it is nearly
//! constant, and such slices, identical in every volume of both labels, took
//! the largest logit of positive and negative bags alike, so the
//! multiple-instance loss stayed at ln 2 and the validation AUROC froze.
//!
//! Slice tensors are laid out `(N, C, P, P)`, rows along the frame's `v`,
//! columns along `u` (as [`crate::geometry::sample_planes`] writes them).

use crate::affine::{Vec3, dot};
use crate::geometry::{Ball, Frame, Plane, TomoGeometry, fibonacci_hemisphere, sample_planes};
use crate::normalize::{
    BODY_MARGIN_VOXELS, Normalization, foreground, foreground_ball, normalize, quantile,
};
use crate::rng::Rng;
use crate::volume::Volume;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which ball the slices cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BallFit {
    /// Fitted to the foreground (the head or body): slices cut tissue, not
    /// air, and pixels are spent on it (docs/METHOD.md section 7).
    #[default]
    Foreground,
    /// The whole field of view (centre and half diagonal).
    Covering,
}

/// Intensity augmentation, applied per slice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Augment {
    pub enabled: bool,
    /// Multiplicative gain drawn from `[1 - scale, 1 + scale]`.
    pub scale: f32,
    /// Additive shift drawn from `[-shift, shift]` (normalised units).
    pub shift: f32,
    /// Gamma `exp(U[-gamma, gamma])` on the slice rescaled to `[0, 1]`.
    pub gamma: f32,
    /// Gaussian noise with a standard deviation drawn from `[0, noise]`.
    pub noise: f32,
    /// Mirror the slice (its `u` axis) with probability 1/2.
    pub flip: bool,
    /// Gaussian blur with a standard deviation drawn from `[0, blur]` pixels
    /// (scans of other resolutions and sharpness).
    pub blur: f32,
    /// In-plane zoom of the slice's pixel grid, drawn from `[1 - zoom, 1 +
    /// zoom]` along `u` and `v` independently (heads of other sizes and
    /// shapes); a MIL bag's slices share one draw, so they stay parallel
    /// and alike. Applied to the geometry, so it costs no resampling.
    pub zoom: f32,
    /// A smooth random warp of the slice: displacements drawn with this
    /// standard deviation (pixels) on a 4 x 4 grid of control points over the
    /// slice, interpolated bilinearly (anatomy of other shapes: ventricles,
    /// sulci and outlines that no training subject has).
    pub elastic: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            enabled: true,
            scale: 0.1,
            shift: 0.1,
            gamma: 0.2,
            noise: 0.05,
            flip: false,
            blur: 0.0,
            zoom: 0.0,
            elastic: 0.0,
        }
    }
}

/// How volumes become slices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingConfig {
    /// Pixels per slice side (`P`).
    pub slice_size: usize,
    pub ball: BallFit,
    pub normalization: Normalization,
    pub augment: Augment,
    /// Draw offsets only where slices cut the foreground (see the module docs);
    /// `false`: anywhere in the ball.
    pub foreground_offsets: bool,
    /// Share of the foreground's extent along a normal that offsets span
    /// (centred), so that the outermost slices still cut tissue.
    pub offset_span: f64,
    /// With a scale (mm), two more channels per image channel: the smallest
    /// and the largest eigenvalue of the normalised image's Hessian at that
    /// scale ([`crate::hessian`]: a dark tumour is a 3D minimum, a sulcus is
    /// not); `None`: the image channels alone.
    pub hessian_sigma_mm: Option<f64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            slice_size: 64,
            ball: BallFit::Foreground,
            normalization: Normalization::default(),
            augment: Augment::default(),
            foreground_offsets: true,
            offset_span: 0.9,
            hessian_sigma_mm: None,
        }
    }
}

impl SamplingConfig {
    /// The largest slice side: a 1024^2 slice is already beyond what the
    /// encoders are trained at, and a typo must not allocate gigabytes.
    pub const MAX_SLICE_SIZE: usize = 1024;

    /// Checks every field's range (a config file can hold anything).
    pub fn validate(&self) -> Result<()> {
        if !(16..=Self::MAX_SLICE_SIZE).contains(&self.slice_size) {
            return Err(Error::invalid(
                "slice size",
                format!(
                    "{}; use 16 to {} pixels",
                    self.slice_size,
                    Self::MAX_SLICE_SIZE
                ),
            ));
        }
        if !(self.offset_span > 0.0 && self.offset_span <= 1.0) {
            return Err(Error::invalid(
                "offset_span",
                format!("{} (must be in (0, 1])", self.offset_span),
            ));
        }
        if let Some(sigma) = self.hessian_sigma_mm {
            crate::hessian::check_sigma(sigma)?;
        }
        let a = &self.augment;
        let ranges = [
            ("augment.scale", a.scale, 1.0),
            ("augment.shift", a.shift, f32::MAX),
            ("augment.gamma", a.gamma, f32::MAX),
            ("augment.noise", a.noise, f32::MAX),
            ("augment.blur", a.blur, 64.0),
            ("augment.zoom", a.zoom, 0.5),
            ("augment.elastic", a.elastic, 64.0),
        ];
        for (name, v, max) in ranges {
            if !(v >= 0.0 && v.is_finite() && v < max) {
                return Err(Error::invalid(
                    name,
                    format!("{v} (must be finite, at least 0 and below {max})"),
                ));
            }
        }
        Ok(())
    }
}

/// A volume ready for slicing: normalised, with its ball and the value
/// that stands for "outside the volume".
#[derive(Debug, Clone)]
pub struct PreparedVolume {
    pub name: String,
    pub volume: Volume,
    pub ball: Ball,
    pub background: f32,
    pub label: Option<bool>,
    /// Up to [`EXTENT_POINTS`] foreground voxel positions relative to the
    /// ball's centre (mm), for the foreground's extent along a normal.
    extent_points: Vec<Vec3>,
    foreground_offsets: bool,
    offset_span: f64,
}

/// Foreground points kept per volume for its extent: a regular subsample,
/// whose extent is within a voxel or two of the whole foreground's.
pub const EXTENT_POINTS: usize = 4096;

impl PreparedVolume {
    /// Normalises `volume` and fits its ball as `config` says.
    pub fn new(
        name: &str,
        volume: &Volume,
        label: Option<bool>,
        config: &SamplingConfig,
    ) -> Result<Self> {
        Self::with_body_mask(name, volume, label, config, None)
    }

    /// [`PreparedVolume::new`] with `volume`'s [`body_mask`] given, when the
    /// caller has it already (the Hessian channels need it).
    ///
    /// [`body_mask`]: crate::normalize::body_mask
    pub fn with_body_mask(
        name: &str,
        volume: &Volume,
        label: Option<bool>,
        config: &SamplingConfig,
        body: Option<&[bool]>,
    ) -> Result<Self> {
        if body.is_some_and(|b| b.len() != volume.shape().iter().product::<usize>()) {
            return Err(Error::invalid(
                "body mask",
                "its voxel count is not the volume's",
            ));
        }
        if !(config.offset_span > 0.0 && config.offset_span <= 1.0) {
            return Err(Error::invalid(
                "offset_span",
                format!("{}; must be in (0, 1]", config.offset_span),
            ));
        }
        let fg = foreground(volume);
        let ball = match config.ball {
            BallFit::Covering => Ball::covering(volume),
            BallFit::Foreground => foreground_ball(volume, &fg),
        };
        let [nx, ny, _] = volume.shape();
        let inside: Vec<usize> = (0..fg.len()).filter(|&i| fg[i]).collect();
        let stride = inside.len().div_ceil(EXTENT_POINTS).max(1);
        let extent_points = inside
            .iter()
            .step_by(stride)
            .map(|&idx| {
                let w = volume.voxel_to_world([
                    (idx % nx) as f64,
                    ((idx / nx) % ny) as f64,
                    (idx / (nx * ny)) as f64,
                ]);
                [0, 1, 2].map(|a| w[a] - ball.center_mm[a])
            })
            .collect();
        let normalised = normalize(volume, config.normalization)?;
        // Air: the darkest percentile of the normalised volume.
        let background = quantile(normalised.channel(0), 0.01);
        let volume = match config.hessian_sigma_mm {
            // On the normalised image, so that the eigenvalues are in the same
            // units in every scan; outside the body they would show the air's
            // edge, not anatomy.
            Some(sigma) => {
                let computed;
                let body = match body {
                    Some(b) => b,
                    None => {
                        computed = crate::normalize::body_mask(volume, BODY_MARGIN_VOXELS);
                        &computed
                    }
                };
                crate::hessian::with_hessian_channels(&normalised, sigma, body)?
            }
            None => normalised,
        };
        Ok(Self {
            name: name.to_string(),
            volume,
            ball,
            background,
            label,
            extent_points,
            foreground_offsets: config.foreground_offsets,
            offset_span: config.offset_span,
        })
    }

    /// A volume already normalised, with its ball and background given; its
    /// offsets span the whole ball (no foreground extent is known).
    pub fn from_parts(
        name: &str,
        volume: Volume,
        ball: Ball,
        background: f32,
        label: Option<bool>,
    ) -> Self {
        Self {
            name: name.to_string(),
            volume,
            ball,
            background,
            label,
            extent_points: Vec::new(),
            foreground_offsets: false,
            offset_span: 1.0,
        }
    }

    /// The range of slice offsets (mm from the ball's centre along `n`) that
    /// training and validation draw from: the inner `offset_span` of the
    /// foreground's extent along `n`, or the whole ball.
    pub fn offset_range(&self, n: Vec3) -> (f64, f64) {
        let rho = self.ball.radius_mm;
        if !self.foreground_offsets || self.extent_points.is_empty() {
            return (-rho, rho);
        }
        let (lo, hi) = self
            .extent_points
            .iter()
            .map(|&p| dot(p, n))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), t| {
                (l.min(t), h.max(t))
            });
        let (lo, hi) = (lo.max(-rho), hi.min(rho));
        let (mid, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0 * self.offset_span);
        (mid - half, mid + half)
    }

    /// Validation planes: for each of `directions` Fibonacci directions,
    /// `slices` offsets evenly spread over [`Self::offset_range`], `pixels`
    /// across the ball. Laid out direction after direction.
    pub fn validation_planes(
        &self,
        directions: usize,
        slices: usize,
        pixels: usize,
    ) -> Result<Vec<Plane>> {
        if directions == 0 || slices == 0 {
            return Err(Error::invalid(
                "validation slices",
                format!("{directions} directions x {slices} offsets; need at least one of each"),
            ));
        }
        let rho = self.ball.radius_mm;
        let mut planes = Vec::with_capacity(directions * slices);
        for n in fibonacci_hemisphere(directions) {
            let f = Frame::from_normal(n, 0.0);
            let (lo, hi) = self.offset_range(f.n);
            for j in 0..slices {
                let t = lo + (j as f64 + 0.5) / slices as f64 * (hi - lo);
                planes.push(Plane::centered(self.ball.center_mm, &f, t, rho, pixels));
            }
        }
        Ok(planes)
    }

    /// Samples `plane` of every channel into `out` (`C * P * P` values).
    pub fn sample(&self, plane: &Plane, out: &mut [f32]) {
        sample_planes(
            &self.volume,
            std::slice::from_ref(plane),
            self.background,
            out,
        );
    }

    /// The geometry of this volume's inference slices: `K` Fibonacci
    /// directions, `S` offsets, `P` pixels over its ball.
    pub fn geometry(
        &self,
        directions: usize,
        slices: usize,
        pixels: usize,
    ) -> Result<TomoGeometry> {
        TomoGeometry::fibonacci(self.ball, directions, slices, pixels, 0.0)
    }
}

/// A batch of slices `(N, C, P, P)` and their labels `(N)`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub slices: Vec<f32>,
    pub labels: Vec<f32>,
    pub n: usize,
    pub channels: usize,
    pub pixels: usize,
}

/// Draws balanced, augmented random slices from labelled volumes.
#[derive(Debug)]
pub struct SliceSampler {
    volumes: Vec<PreparedVolume>,
    positives: Vec<usize>,
    negatives: Vec<usize>,
    config: SamplingConfig,
    channels: usize,
}

impl SliceSampler {
    /// Needs at least one volume of each label and one channel count for all.
    pub fn new(volumes: Vec<PreparedVolume>, config: SamplingConfig) -> Result<Self> {
        let positives: Vec<usize> = (0..volumes.len())
            .filter(|&i| volumes[i].label == Some(true))
            .collect();
        let negatives: Vec<usize> = (0..volumes.len())
            .filter(|&i| volumes[i].label == Some(false))
            .collect();
        if positives.is_empty() || negatives.is_empty() {
            return Err(Error::invalid(
                "training volumes",
                format!(
                    "{} positive and {} negative: both labels are needed",
                    positives.len(),
                    negatives.len()
                ),
            ));
        }
        let channels = volumes[0].volume.channels();
        if let Some(v) = volumes.iter().find(|v| v.volume.channels() != channels) {
            return Err(Error::invalid(
                "training volumes",
                format!(
                    "{} has {} channel(s), {} has {channels}",
                    v.name,
                    v.volume.channels(),
                    volumes[0].name
                ),
            ));
        }
        Ok(Self {
            volumes,
            positives,
            negatives,
            config,
            channels,
        })
    }

    /// Channels per slice.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The channels of the scans themselves, before the Hessian channels.
    fn image_channels(&self) -> usize {
        if self.config.hessian_sigma_mm.is_some() {
            self.channels / 3
        } else {
            self.channels
        }
    }

    /// The in-plane zoom of one slice or bag, `[1, 1]` without zoom (no
    /// draw, so runs without it keep their random streams).
    fn zoom(&self, rng: &mut Rng) -> [f64; 2] {
        let z = self.config.augment.zoom as f64;
        if !self.config.augment.enabled || z == 0.0 {
            return [1.0, 1.0];
        }
        [rng.range(1.0 - z, 1.0 + z), rng.range(1.0 - z, 1.0 + z)]
    }

    /// One random slice of volume `v` into `out`, augmented.
    pub fn random_slice(&self, v: usize, rng: &mut Rng, out: &mut [f32]) {
        let vol = &self.volumes[v];
        let p = self.config.slice_size;
        let frame = Frame::from_normal(
            rng.unit_vector(),
            rng.range(0.0, 2.0 * std::f64::consts::PI),
        );
        let rho = vol.ball.radius_mm;
        let (lo, hi) = vol.offset_range(frame.n);
        let t = rng.range(lo, hi);
        let zoom = self.zoom(rng);
        let plane = Plane::centered(vol.ball.center_mm, &frame, t, rho, p).zoomed(zoom);
        vol.sample(&plane, out);
        if self.config.augment.enabled {
            augment(out, p, self.image_channels(), &self.config.augment, rng);
        }
    }

    /// Batch number `step` of `bags` bags of `per_bag` parallel slices each
    /// (multiple-instance training): a bag is one volume cut along one random
    /// direction at `per_bag` evenly spaced offsets across its offset range
    /// (jittered together), so that a positive bag almost surely holds the lesion.
    /// Bags alternate positive and negative; slices are laid out bag after bag.
    pub fn bags(&self, seed: u64, step: u64, bags: usize, per_bag: usize) -> Batch {
        let (c, p) = (self.channels, self.config.slice_size);
        let per = c * p * p;
        let mut slices = vec![0.0f32; bags * per_bag * per];
        let labels: Vec<f32> = (0..bags).map(|i| (i % 2 == 0) as u8 as f32).collect();
        let base = Rng::fork(seed, step).next_u64();
        slices
            .par_chunks_mut(per_bag * per)
            .enumerate()
            .for_each(|(i, bag)| {
                let mut rng = Rng::fork(base, i as u64);
                let pool = if i % 2 == 0 {
                    &self.positives
                } else {
                    &self.negatives
                };
                let vol = &self.volumes[pool[rng.below(pool.len())]];
                let frame = Frame::from_normal(
                    rng.unit_vector(),
                    rng.range(0.0, 2.0 * std::f64::consts::PI),
                );
                let rho = vol.ball.radius_mm;
                let (lo, hi) = vol.offset_range(frame.n);
                let spacing = (hi - lo) / per_bag as f64;
                let jitter = rng.range(0.0, spacing);
                let aug_seed = rng.next_u64();
                let zoom = self.zoom(&mut rng);
                for (j, out) in bag.chunks_exact_mut(per).enumerate() {
                    let t = lo + jitter + j as f64 * spacing;
                    let plane = Plane::centered(vol.ball.center_mm, &frame, t, rho, p).zoomed(zoom);
                    vol.sample(&plane, out);
                    if self.config.augment.enabled {
                        augment(
                            out,
                            p,
                            self.image_channels(),
                            &self.config.augment,
                            &mut Rng::fork(aug_seed, j as u64),
                        );
                    }
                }
            });
        Batch {
            slices,
            labels,
            n: bags * per_bag,
            channels: c,
            pixels: p,
        }
    }

    /// Batch number `step` of a run seeded with `seed`: `n` slices, half
    /// from positive volumes and half from negative ones, interleaved.
    pub fn batch(&self, seed: u64, step: u64, n: usize) -> Batch {
        let (c, p) = (self.channels, self.config.slice_size);
        let per = c * p * p;
        let mut slices = vec![0.0f32; n * per];
        let labels: Vec<f32> = (0..n).map(|i| (i % 2 == 0) as u8 as f32).collect();
        let base = Rng::fork(seed, step).next_u64();
        slices.par_chunks_mut(per).enumerate().for_each(|(i, out)| {
            let mut rng = Rng::fork(base, i as u64);
            let pool = if i % 2 == 0 {
                &self.positives
            } else {
                &self.negatives
            };
            let v = pool[rng.below(pool.len())];
            self.random_slice(v, &mut rng, out);
        });
        Batch {
            slices,
            labels,
            n,
            channels: c,
            pixels: p,
        }
    }
}

/// Augmentation of one slice of `pixels x pixels`: intensity on its first
/// `image_channels` channels (the Hessian channels after them are shapes,
/// which a gain, shift or gamma of the image would not produce as such),
/// then the optional mirror, warp and blur of every channel alike.
pub fn augment(x: &mut [f32], pixels: usize, image_channels: usize, a: &Augment, rng: &mut Rng) {
    let pp = pixels * pixels;
    let image = (image_channels * pp).min(x.len());
    intensity(&mut x[..image], a, rng);
    if a.flip && rng.uniform() < 0.5 {
        for row in x.chunks_exact_mut(pixels) {
            row.reverse();
        }
    }
    if a.elastic > 0.0 {
        warp(x, pixels, a.elastic, rng);
    }
    if a.blur > 0.0 {
        let sigma = rng.range(0.0, a.blur as f64);
        if sigma > 0.05 {
            let kernel = gaussian_kernel(sigma);
            for channel in x.chunks_exact_mut(pp) {
                blur(channel, pixels, &kernel);
            }
        }
    }
}

/// Control points per side of [`warp`]'s displacement grid.
const WARP_GRID: usize = 4;

/// Resamples every `p x p` channel of `x` through one smooth random
/// displacement field: Gaussian displacements of standard deviation
/// `sigma` pixels on a [`WARP_GRID`]^2 grid spanning the slice,
/// interpolated bilinearly to every pixel; values are read bilinearly, edges
/// clamped, so every output lies within the input's range.
fn warp(x: &mut [f32], p: usize, sigma: f32, rng: &mut Rng) {
    let g = WARP_GRID;
    let grid: Vec<[f32; 2]> = (0..g * g)
        .map(|_| [0, 1].map(|_| sigma * rng.normal() as f32))
        .collect();
    let span = (p.max(2) - 1) as f32;
    let lerp = |t: f32| -> (usize, usize, f32) {
        let u = (t / span * (g - 1) as f32).clamp(0.0, (g - 1) as f32);
        let i = (u.floor() as usize).min(g - 2);
        (i, i + 1, u - i as f32)
    };
    let clamp = |v: f32| v.clamp(0.0, span);
    let pp = p * p;
    let mut out = vec![0.0f32; x.len()];
    for r in 0..p {
        let (r0, r1, fr) = lerp(r as f32);
        for c in 0..p {
            let (c0, c1, fc) = lerp(c as f32);
            let d = |k: usize| {
                let at = |i: usize, j: usize| grid[i * g + j][k];
                (1.0 - fr) * ((1.0 - fc) * at(r0, c0) + fc * at(r0, c1))
                    + fr * ((1.0 - fc) * at(r1, c0) + fc * at(r1, c1))
            };
            let (y, xx) = (clamp(r as f32 + d(0)), clamp(c as f32 + d(1)));
            let (y0, x0) = (y.floor() as usize, xx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(p - 1), (x0 + 1).min(p - 1));
            let (fy, fx) = (y - y0 as f32, xx - x0 as f32);
            for ch in 0..x.len() / pp {
                let img = &x[ch * pp..(ch + 1) * pp];
                out[ch * pp + r * p + c] = (1.0 - fy)
                    * ((1.0 - fx) * img[y0 * p + x0] + fx * img[y0 * p + x1])
                    + fy * ((1.0 - fx) * img[y1 * p + x0] + fx * img[y1 * p + x1]);
            }
        }
    }
    x.copy_from_slice(&out);
}

/// Normalised Gaussian taps `[-r, r]`, `r = ceil(3 sigma)`.
fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as i64;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    w.iter().map(|v| (v / sum) as f32).collect()
}

/// Separable blur of a `p x p` image, edges clamped.
fn blur(img: &mut [f32], p: usize, kernel: &[f32]) {
    let r = (kernel.len() / 2) as i64;
    let mut tmp = vec![0.0f32; img.len()];
    let clamp = |i: i64| i.clamp(0, p as i64 - 1) as usize;
    for y in 0..p {
        for x in 0..p {
            tmp[y * p + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * img[y * p + clamp(x as i64 + k as i64 - r)])
                .sum();
        }
    }
    for y in 0..p {
        for x in 0..p {
            img[y * p + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * tmp[clamp(y as i64 + k as i64 - r) * p + x])
                .sum();
        }
    }
}

/// Gain, shift, gamma and noise of one slice.
fn intensity(x: &mut [f32], a: &Augment, rng: &mut Rng) {
    let gain = rng.range(1.0 - a.scale as f64, 1.0 + a.scale as f64) as f32;
    let shift = rng.range(-a.shift as f64, a.shift as f64) as f32;
    let gamma = rng.range(-a.gamma as f64, a.gamma as f64).exp() as f32;
    let sigma = rng.range(0.0, a.noise as f64) as f32;
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let range = hi - lo;
    for v in x.iter_mut() {
        let mut y = *v;
        if range > 0.0 && gamma != 1.0 {
            y = lo + range * ((y - lo) / range).powf(gamma);
        }
        y = y * gain + shift;
        if sigma > 0.0 {
            y += sigma * rng.normal() as f32;
        }
        *v = y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthConfig, generate_case};

    fn volumes() -> Vec<PreparedVolume> {
        let cfg = SynthConfig {
            size: 24,
            ..SynthConfig::default()
        };
        (0..4)
            .map(|i| {
                let c = generate_case(&cfg, i, i % 2 == 0, false).unwrap();
                PreparedVolume::new(
                    &c.name,
                    &c.image,
                    Some(c.label()),
                    &SamplingConfig::default(),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn hessian_channels_follow_the_image_and_keep_the_ball() {
        let cfg = SynthConfig {
            size: 24,
            ..SynthConfig::default()
        };
        let c = generate_case(&cfg, 0, true, false).unwrap();
        let plain = PreparedVolume::new("x", &c.image, None, &SamplingConfig::default()).unwrap();
        let sc = SamplingConfig {
            hessian_sigma_mm: Some(6.0),
            ..SamplingConfig::default()
        };
        let h = PreparedVolume::new("x", &c.image, None, &sc).unwrap();
        assert_eq!(h.volume.channels(), 3);
        assert_eq!(h.volume.channel(0), plain.volume.channel(0));
        // The ball and the offsets come from the image, not from the derived channels.
        assert_eq!(h.ball, plain.ball);
        assert_eq!(
            h.offset_range([0.0, 0.6, 0.8]),
            plain.offset_range([0.0, 0.6, 0.8])
        );
        // A body mask handed in is the one the Hessian channels are cut to,
        // not one computed again: with the lower half of the body, they are
        // zero above it and the computed mask's values below.
        let body = crate::normalize::body_mask(&c.image, BODY_MARGIN_VOXELS);
        let half: Vec<bool> = (0..body.len())
            .map(|i| body[i] && i < body.len() / 2)
            .collect();
        let given = PreparedVolume::with_body_mask("x", &c.image, None, &sc, Some(&half)).unwrap();
        assert_eq!(given.volume.channel(0), h.volume.channel(0));
        for ch in [1, 2] {
            let (g, w) = (given.volume.channel(ch), h.volume.channel(ch));
            for i in 0..half.len() {
                assert_eq!(
                    g[i],
                    if half[i] { w[i] } else { 0.0 },
                    "channel {ch}, voxel {i}"
                );
            }
            assert!((body.len() / 2..body.len()).any(|i| w[i] != 0.0));
        }
        let none = vec![false; body.len()];
        let cut = PreparedVolume::with_body_mask("x", &c.image, None, &sc, Some(&none)).unwrap();
        assert!(cut.volume.channel(1).iter().all(|&x| x == 0.0));
        assert!(cut.volume.channel(2).iter().all(|&x| x == 0.0));
        let e =
            PreparedVolume::with_body_mask("x", &c.image, None, &sc, Some(&body[1..])).unwrap_err();
        assert!(e.to_string().contains("body mask"), "{e}");
        let (mut pos, mut neg) = (h.clone(), h);
        (pos.label, neg.label) = (Some(true), Some(false));
        let s = SliceSampler::new(vec![pos, neg], sc.clone()).unwrap();
        assert_eq!(s.channels(), 3);
        assert_eq!(s.image_channels(), 1);
        for bad in [0.0, -2.0, f64::INFINITY] {
            let sc = SamplingConfig {
                hessian_sigma_mm: Some(bad),
                ..SamplingConfig::default()
            };
            assert!(sc.validate().is_err());
            assert!(PreparedVolume::new("x", &c.image, None, &sc).is_err());
        }
    }

    #[test]
    fn batches_are_balanced_reproducible_and_differ_between_steps() {
        let s = SliceSampler::new(
            volumes(),
            SamplingConfig {
                slice_size: 16,
                ..SamplingConfig::default()
            },
        )
        .unwrap();
        let a = s.batch(5, 10, 8);
        let b = s.batch(5, 10, 8);
        let c = s.batch(5, 11, 8);
        assert_eq!(a.slices, b.slices);
        assert_ne!(a.slices, c.slices);
        assert_eq!(a.labels.iter().sum::<f32>(), 4.0);
        assert_eq!(a.slices.len(), 8 * 16 * 16);
        assert!(a.slices.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn one_class_and_mixed_channels_are_refused() {
        let mut v = volumes();
        v.retain(|x| x.label == Some(true));
        let e = SliceSampler::new(v, SamplingConfig::default()).unwrap_err();
        assert!(e.to_string().contains("both labels"), "{e}");
        let mut v = volumes();
        let two = Volume::new(
            [v[1].volume.data(), v[1].volume.data()].concat(),
            v[1].volume.shape(),
            2,
            *v[1].volume.world_from_voxel(),
        )
        .unwrap();
        v[1].volume = two;
        let e = SliceSampler::new(v, SamplingConfig::default()).unwrap_err();
        assert!(e.to_string().contains("channel"), "{e}");
    }

    #[test]
    fn foreground_ball_slices_are_mostly_tissue() {
        // With the ball fitted to the head, a central slice is mostly head;
        // with the covering ball, air takes a larger share.
        let cfg = SynthConfig {
            size: 32,
            ..SynthConfig::default()
        };
        let case = generate_case(&cfg, 0, false, false).unwrap();
        let tissue_share = |fit: BallFit| {
            let sc = SamplingConfig {
                ball: fit,
                slice_size: 32,
                ..SamplingConfig::default()
            };
            let v = PreparedVolume::new("x", &case.image, None, &sc).unwrap();
            let frame = Frame::from_normal([0.0, 0.0, 1.0], 0.0);
            let plane = Plane::centered(v.ball.center_mm, &frame, 0.0, v.ball.radius_mm, 32);
            let mut out = vec![0.0; 32 * 32];
            v.sample(&plane, &mut out);
            out.iter().filter(|&&x| x > v.background + 0.5).count() as f64 / out.len() as f64
        };
        let (fg, cov) = (
            tissue_share(BallFit::Foreground),
            tissue_share(BallFit::Covering),
        );
        assert!(
            fg > cov + 0.1 && fg > 0.5,
            "tissue share: foreground ball {fg}, covering ball {cov}"
        );
    }

    #[test]
    fn foreground_offsets_keep_every_bag_slice_in_tissue() {
        // Slices drawn across the whole ball graze or miss the head at its
        // ends (nearly constant slices, the same in every volume); drawn
        // within the foreground's extent, every slice of a bag cuts tissue.
        let cfg = SynthConfig {
            size: 32,
            ..SynthConfig::default()
        };
        let case = generate_case(&cfg, 1, true, false).unwrap();
        let tissue_shares = |foreground_offsets: bool| {
            let sc = SamplingConfig {
                slice_size: 32,
                foreground_offsets,
                augment: Augment {
                    enabled: false,
                    ..Augment::default()
                },
                ..SamplingConfig::default()
            };
            let v = PreparedVolume::new("x", &case.image, Some(true), &sc).unwrap();
            let other = PreparedVolume::new("y", &case.image, Some(false), &sc).unwrap();
            let bg = v.background;
            let s = SliceSampler::new(vec![v, other], sc).unwrap();
            let mut shares = Vec::new();
            for step in 0..8 {
                let b = s.bags(3, step, 2, 16);
                for slice in b.slices.chunks_exact(32 * 32) {
                    let t = slice.iter().filter(|&&x| x > bg + 0.5).count();
                    shares.push(t as f64 / slice.len() as f64);
                }
            }
            shares
        };
        let inside = tissue_shares(true);
        let ball = tissue_shares(false);
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            min(&inside) > 0.05,
            "least tissue in a bag slice: {}",
            min(&inside)
        );
        assert!(
            min(&ball) < 0.02,
            "whole-ball bags had no empty slice: {}",
            min(&ball)
        );
    }

    #[test]
    fn offset_range_is_the_foregrounds_extent() {
        let cfg = SynthConfig {
            size: 32,
            ..SynthConfig::default()
        };
        let case = generate_case(&cfg, 0, false, false).unwrap();
        let sc = SamplingConfig {
            offset_span: 1.0,
            ..SamplingConfig::default()
        };
        let v = PreparedVolume::new("x", &case.image, None, &sc).unwrap();
        let rho = v.ball.radius_mm;
        for n in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.6, 0.8]] {
            let (lo, hi) = v.offset_range(n);
            assert!(
                -rho <= lo && lo < 0.0 && 0.0 < hi && hi <= rho,
                "{n:?}: {lo} {hi}"
            );
            // The synthetic head is at least 120 mm across in every direction.
            assert!(hi - lo > 120.0, "{n:?}: {lo} {hi}");
        }
        let bad = SamplingConfig {
            offset_span: 0.0,
            ..SamplingConfig::default()
        };
        assert!(PreparedVolume::new("x", &case.image, None, &bad).is_err());
    }

    #[test]
    fn a_warp_moves_pixels_smoothly_within_the_input_range() {
        let p = 32;
        let img: Vec<f32> = (0..p * p)
            .map(|i| ((i % p) as f32 * 0.3).sin() + (i / p) as f32 * 0.05)
            .collect();
        let (lo, hi) = img
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        // No displacement: the same slice.
        let mut same = img.clone();
        warp(&mut same, p, 0.0, &mut Rng::new(3));
        assert!(same.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-6));
        let mut moved = img.clone();
        warp(&mut moved, p, 2.0, &mut Rng::new(3));
        assert!(moved.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        let changed = moved
            .iter()
            .zip(&img)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3)
            .count();
        assert!(changed > p * p / 2, "{changed} pixels moved");
        // Smooth: a point moves by about as much as its neighbour does, so a
        // linear ramp stays nearly linear (second differences stay small).
        let ramp: Vec<f32> = (0..p * p).map(|i| (i % p) as f32).collect();
        let mut r = ramp.clone();
        warp(&mut r, p, 2.0, &mut Rng::new(4));
        for row in r.chunks_exact(p) {
            // (Away from the edges, where reads are clamped.)
            for w in row
                .windows(3)
                .filter(|w| w.iter().all(|&v| v > 1.0 && v < (p - 2) as f32))
            {
                assert!((w[0] - 2.0 * w[1] + w[2]).abs() < 0.6, "{w:?}");
            }
        }
        // Every channel moves alike.
        let mut two: Vec<f32> = img.iter().chain(img.iter()).copied().collect();
        warp(&mut two, p, 2.0, &mut Rng::new(3));
        assert_eq!(&two[..p * p], &moved[..]);
        assert_eq!(&two[p * p..], &moved[..]);
    }

    #[test]
    fn augmentation_keeps_order_and_leaves_hessian_channels_alone() {
        let mut rng = Rng::new(1);
        // One image channel, then one Hessian channel.
        let mut x: Vec<f32> = (0..200).map(|i| i as f32 / 10.0).collect();
        let before = x.clone();
        augment(
            &mut x,
            10,
            1,
            &Augment {
                noise: 0.0,
                ..Augment::default()
            },
            &mut rng,
        );
        assert!(
            x[..100].windows(2).all(|w| w[1] > w[0]),
            "monotone without noise"
        );
        assert_ne!(x[..100], before[..100]);
        assert_eq!(x[100..], before[100..]);
    }

    #[test]
    fn blur_keeps_the_mean_and_flip_mirrors_rows() {
        let p = 16;
        let mut img = vec![0.0f32; p * p];
        img[8 * p + 8] = 1.0;
        let k = gaussian_kernel(1.5);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        blur(&mut img, p, &k);
        assert!((img.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(img[8 * p + 8] < 0.2 && img[8 * p + 9] > 0.0);
        // A mirrored slice: only the flip, no intensity change.
        let a = Augment {
            scale: 0.0,
            shift: 0.0,
            gamma: 0.0,
            noise: 0.0,
            flip: true,
            ..Augment::default()
        };
        let row: Vec<f32> = (0..p).map(|i| i as f32).collect();
        let (mut flipped, mut kept) = (0, 0);
        for seed in 0..20 {
            let mut x = row.repeat(p);
            augment(&mut x, p, 1, &a, &mut Rng::new(seed));
            if x[0] == (p - 1) as f32 {
                flipped += 1;
                assert!(
                    x.chunks(p)
                        .all(|r| r.iter().rev().copied().eq(row.iter().copied()))
                );
            } else {
                kept += 1;
                assert_eq!(x, row.repeat(p));
            }
        }
        assert!(flipped > 0 && kept > 0);
    }
}
