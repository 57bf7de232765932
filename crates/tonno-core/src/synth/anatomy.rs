//! Lesions implanted into real healthy scans (`tonno synth --anatomy`): the
//! benchmark that synthetic heads cannot be, because the anatomy around the
//! lesions is a real subject's.
//!
//! Each case takes one source scan, resamples it onto a `size^3` grid of
//! `spacing_mm` voxels centred on the world origin through a random rigid
//! transform and scale (about the source's foreground centroid), implants
//! zero to a few tumours inside the foreground (each with an irregular
//! outline, brighter or darker than the tissue it replaces, optionally with a
//! necrotic core, a rim and darker oedema around it), then applies a smooth
//! bias field, a gamma and Rician-like noise. The mask is the tumour (core
//! and rim included, oedema not). Everything is fixed by the seed.
//!
//! Units: mm in RAS+ world coordinates. Intensities: each source is scaled
//! so that its foreground median is 1; noise is relative to that.

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Ellipsoid, Field, Lesion, LesionInfo, SynthCase, lesion_axes, lesion_bumps};
use crate::affine::{Affine, Vec3, cross, dot, norm, sub};
use crate::error::{Error, Result};
use crate::io::{list_images, read_image};
use crate::normalize::{fill_holes, foreground_ball, foreground_mask, masked_median};
use crate::rng::Rng;
use crate::volume::Volume;

/// Options of `tonno synth --anatomy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnatomyConfig {
    /// Voxels per side of the output grid.
    pub size: usize,
    /// Output voxel size in mm.
    pub spacing_mm: f64,
    pub cases: usize,
    /// Master seed: case `i` draws from `Rng::fork(seed, i)`.
    pub seed: u64,
    pub positive_fraction: f64,
    pub test_fraction: f64,
    /// Put whole source scans in the test split, so that testing is on
    /// subjects never seen in training.
    pub split_by_source: bool,
    /// Largest rotation, in degrees, about a random axis.
    pub max_rotation_deg: f64,
    /// Range of the isotropic scale factor.
    pub scale: (f64, f64),
    /// Largest translation of the source's centroid from the grid centre, mm.
    pub max_shift_mm: f64,
    /// Amplitude of the smooth multiplicative bias field.
    pub bias: f64,
    /// Gamma `exp(U[-gamma, gamma])` applied to the intensities.
    pub gamma: f64,
    /// Standard deviation of the Gaussian noise (before the magnitude),
    /// relative to the foreground median.
    pub noise: f64,
    /// Range of the number of lesions of a positive case.
    pub lesions: (usize, usize),
    /// Range of a lesion's mean radius in mm (drawn log-uniformly).
    pub radius_mm: (f64, f64),
    /// Range of a lesion's relative intensity change (its sign is random).
    pub contrast: (f64, f64),
    /// Chance that a lesion has a necrotic (darker) core.
    pub core_probability: f64,
    /// Chance that a lesion has a brighter rim.
    pub rim_probability: f64,
    /// Chance that a lesion is surrounded by darker oedema.
    pub oedema_probability: f64,
    /// Smallest distance in mm between a lesion's outer extent (oedema
    /// included) and the edge of the foreground.
    pub margin_mm: f64,
}

impl Default for AnatomyConfig {
    fn default() -> Self {
        Self {
            size: 64,
            spacing_mm: 3.0,
            cases: 40,
            seed: 0,
            positive_fraction: 0.5,
            test_fraction: 0.25,
            split_by_source: false,
            max_rotation_deg: 15.0,
            scale: (0.9, 1.1),
            max_shift_mm: 6.0,
            bias: 0.15,
            gamma: 0.15,
            noise: 0.03,
            lesions: (1, 2),
            radius_mm: (7.0, 22.0),
            contrast: (0.25, 0.6),
            core_probability: 0.3,
            rim_probability: 0.3,
            oedema_probability: 0.5,
            margin_mm: 6.0,
        }
    }
}

impl AnatomyConfig {
    /// Checks ranges, before anything is read or written.
    pub fn validate(&self) -> Result<()> {
        if self.size < 8 {
            return Err(Error::invalid(
                "size",
                format!("{} voxels per side; use at least 8", self.size),
            ));
        }
        if !(self.spacing_mm > 0.0 && self.spacing_mm.is_finite()) {
            return Err(Error::invalid(
                "spacing",
                format!("{} mm; it must be positive", self.spacing_mm),
            ));
        }
        if self.cases == 0 {
            return Err(Error::invalid("cases", "0; ask for at least one case"));
        }
        let unit = [
            ("positive fraction", self.positive_fraction),
            ("core probability", self.core_probability),
            ("rim probability", self.rim_probability),
            ("oedema probability", self.oedema_probability),
        ];
        for (name, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::invalid(name, format!("{v}; must be in [0, 1]")));
            }
        }
        if !(0.0..1.0).contains(&self.test_fraction) {
            return Err(Error::invalid(
                "test fraction",
                format!("{}; must be in [0, 1)", self.test_fraction),
            ));
        }
        let ordered = |lo: f64, hi: f64| lo.is_finite() && hi.is_finite() && lo <= hi;
        if !(ordered(self.scale.0, self.scale.1) && self.scale.0 > 0.0) {
            return Err(Error::invalid(
                "scale",
                format!("{:?}; need 0 < LO <= HI", self.scale),
            ));
        }
        if !(ordered(self.radius_mm.0, self.radius_mm.1) && self.radius_mm.0 > 0.0) {
            return Err(Error::invalid(
                "lesion radius",
                format!("{:?} mm; need 0 < LO <= HI", self.radius_mm),
            ));
        }
        if !(ordered(self.contrast.0, self.contrast.1) && self.contrast.0 >= 0.0) {
            return Err(Error::invalid(
                "contrast",
                format!("{:?}; need 0 <= LO <= HI", self.contrast),
            ));
        }
        if self.lesions.0 == 0 || self.lesions.0 > self.lesions.1 {
            return Err(Error::invalid(
                "lesions",
                format!("{:?}; need 1 <= LO <= HI", self.lesions),
            ));
        }
        let non_negative = [
            ("rotation", self.max_rotation_deg),
            ("shift", self.max_shift_mm),
            ("bias", self.bias),
            ("gamma", self.gamma),
            ("noise", self.noise),
            ("margin", self.margin_mm),
        ];
        for (name, v) in non_negative {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::invalid(name, format!("{v}; must be >= 0")));
            }
        }
        if self.bias >= 1.0 {
            return Err(Error::invalid(
                "bias",
                format!("{}; must be below 1", self.bias),
            ));
        }
        Ok(())
    }
}

/// A healthy scan to implant lesions into.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its case name (file name without the extension).
    pub name: String,
    pub path: PathBuf,
    /// Channel 0, scaled so that the foreground median is 1.
    volume: Volume,
    /// The foreground with its holes filled (1 inside, 0 outside), on the
    /// source's grid.
    solid: Volume,
    /// Foreground centroid, mm.
    pub center_mm: Vec3,
    pub foreground_voxels: usize,
    /// Where lesions may go, when narrower than the foreground (a brain
    /// mask of a whole-head scan): 1 inside, 0 outside, on its own grid.
    region: Option<Volume>,
    /// The file `region` came from.
    pub region_path: Option<PathBuf>,
}

/// Narrows where lesions go: each source with a mask of the same case name
/// in `dir` (a brain mask of a whole-head scan, say; above 0.5 inside) gets
/// its lesions inside that mask as well as inside its foreground. Without
/// it a whole head's foreground is scalp, face and neck too, and tumours
/// land there, where no brain tumour grows and where bright fat looks like
/// one. Sources without a mask keep their foreground. A mask that matches
/// no source, or covers none of its source's foreground, is refused.
pub fn attach_masks(sources: &mut [Source], dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Read {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        });
    }
    for file in list_images(dir)? {
        let name = crate::io::case_name(&file);
        let Some(src) = sources.iter_mut().find(|s| s.name == name) else {
            let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::dataset(
                &file,
                format!(
                    "is a mask named {name:?}, but no anatomy scan has that name (they are: {})",
                    names.join(", ")
                ),
            ));
        };
        let mask = read_image(&file)?.volume.channel_volume(0);
        let region: Vec<f32> = mask
            .data()
            .iter()
            .map(|&v| if v > 0.5 { 1.0 } else { 0.0 })
            .collect();
        let region = mask.same_grid(region)?;
        let [nx, ny, _] = src.solid.shape();
        let overlap = (0..src.solid.voxels())
            .filter(|&i| src.solid.data()[i] >= 0.5)
            .any(|i| {
                let v = [i % nx, (i / nx) % ny, i / (nx * ny)].map(|x| x as f64);
                region.sample_world(src.solid.voxel_to_world(v), 0, 0.0) >= 0.5
            });
        if !overlap {
            return Err(Error::dataset(
                &file,
                format!(
                    "covers none of the foreground of {} (is it that scan's mask, in its space?)",
                    src.path.display()
                ),
            ));
        }
        src.region = Some(region);
        src.region_path = Some(file);
    }
    Ok(())
}

/// Reads the healthy scans at `path`: one image (a file, or a folder holding
/// a DICOM series), or every image of a folder (sorted by name). Each needs
/// a foreground (Otsu's threshold).
pub fn load_sources(path: &Path) -> Result<Vec<Source>> {
    let files = if path.is_dir() && !crate::io::dicom::is_series_dir(path) {
        let files = list_images(path)?;
        if files.is_empty() {
            return Err(Error::dataset(
                path,
                "holds no image (.nii, .nii.gz, .nrrd, .nhdr, .dcm, a DICOM series folder) to take anatomy from",
            ));
        }
        files
    } else if path.exists() {
        vec![path.to_path_buf()]
    } else {
        return Err(Error::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        });
    };
    let sources: Vec<Source> = files
        .par_iter()
        .map(|f| load_source(f))
        .collect::<Result<_>>()?;
    for (i, a) in sources.iter().enumerate() {
        if let Some(b) = sources[..i].iter().find(|b| b.name == a.name) {
            return Err(Error::dataset(
                &a.path,
                format!(
                    "has the same case name {:?} as {}; give every source scan its own name",
                    a.name,
                    b.path.display()
                ),
            ));
        }
    }
    Ok(sources)
}

fn load_source(path: &Path) -> Result<Source> {
    let image = read_image(path)?;
    let volume = image.volume.channel_volume(0);
    let mask = foreground_mask(&volume, 0);
    let solid = fill_holes(&mask, volume.shape());
    let count = solid.iter().filter(|&&m| m).count();
    // A foreground needs some extent: 1/1000 of the grid and at least 64 voxels.
    if count < 64.max(volume.voxels() / 1000) {
        return Err(Error::dataset(
            path,
            format!(
                "has no foreground to place lesions in ({count} voxel(s) above Otsu's threshold); \
                 is it an empty or constant image?"
            ),
        ));
    }
    let median = masked_median(volume.data(), &mask);
    if median.is_nan() || median <= 0.0 {
        return Err(Error::dataset(
            path,
            format!(
                "its foreground's median intensity is {median}; anatomy scans need positive intensities (MRI magnitudes)"
            ),
        ));
    }
    let center_mm = foreground_ball(&volume, &solid).center_mm;
    let scaled: Vec<f32> = volume.data().iter().map(|v| v / median).collect();
    let solid_v = volume.same_grid(solid.iter().map(|&m| m as u8 as f32).collect())?;
    Ok(Source {
        name: crate::io::case_name(path),
        path: path.to_path_buf(),
        volume: volume.same_grid(scaled)?,
        solid: solid_v,
        center_mm,
        foreground_voxels: count,
        region: None,
        region_path: None,
    })
}

/// Squared Euclidean distance transform along one line (Felzenszwalb and
/// Huttenlocher's lower envelope of parabolas), in place.
fn edt_line(f: &mut [f64], w2: f64) {
    let n = f.len();
    let mut v = vec![0usize; n];
    let mut z = vec![0.0f64; n + 1];
    let src = f.to_vec();
    let mut k = 0usize;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    // Where the parabolas rooted at q and p (q > p) intersect.
    let inter = |q: usize, p: usize| {
        let (qf, pf) = (q as f64, p as f64);
        ((src[q] + w2 * qf * qf) - (src[p] + w2 * pf * pf)) / (2.0 * w2 * (qf - pf))
    };
    for q in 1..n {
        let mut s = inter(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = inter(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    k = 0;
    for q in 0..n {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let d = q as f64 - v[k] as f64;
        f[q] = w2 * d * d + src[v[k]];
    }
}

/// Distance in mm from each voxel to the nearest voxel outside `mask`
/// (isotropic voxels of `spacing_mm`; 0 outside the mask). Beyond the grid's
/// border counts as outside.
fn depth_mm(mask: &[bool], n: usize, spacing_mm: f64) -> Vec<f64> {
    // Pad by one voxel of background on every side.
    let m = n + 2;
    let big = 1e30;
    let mut d = vec![0.0f64; m * m * m];
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                if mask[i + n * (j + n * k)] {
                    d[(i + 1) + m * ((j + 1) + m * (k + 1))] = big;
                }
            }
        }
    }
    let w2 = spacing_mm * spacing_mm;
    let mut line = vec![0.0f64; m];
    for axis in 0..3 {
        for a in 0..m {
            for b in 0..m {
                let at = |t: usize| match axis {
                    0 => t + m * (a + m * b),
                    1 => a + m * (t + m * b),
                    _ => a + m * (b + m * t),
                };
                for t in 0..m {
                    line[t] = d[at(t)];
                }
                edt_line(&mut line, w2);
                for t in 0..m {
                    d[at(t)] = line[t];
                }
            }
        }
    }
    let mut out = vec![0.0; n * n * n];
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                out[i + n * (j + n * k)] = d[(i + 1) + m * ((j + 1) + m * (k + 1))].sqrt();
            }
        }
    }
    out
}

/// Rotation matrix (rows) of `angle` radians about the unit `axis` (Rodrigues).
fn rotation(axis: Vec3, angle: f64) -> [Vec3; 3] {
    let (s, c) = angle.sin_cos();
    let e = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let rot = |v: Vec3| {
        let kxv = cross(axis, v);
        let kv = dot(axis, v);
        [0, 1, 2].map(|i| v[i] * c + kxv[i] * s + axis[i] * kv * (1.0 - c))
    };
    // Columns are the images of the basis vectors; return rows.
    let cols = e.map(rot);
    [0, 1, 2].map(|r| [cols[0][r], cols[1][r], cols[2][r]])
}

/// A tumour: an irregular lesion with optional core, rim and oedema.
#[derive(Debug, Clone)]
struct Tumour {
    lesion: Lesion,
    /// Normalised depth (share of the radius) beyond which the core starts,
    /// and its relative change.
    core: Option<(f64, f64)>,
    /// Rim width (share of the radius) and its relative change.
    rim: Option<(f64, f64)>,
    /// Oedema width (share of the radius) and its relative change.
    oedema: Option<(f64, f64)>,
}

impl Tumour {
    /// Outer extent in mm (oedema included) for placement.
    fn extent_mm(&self) -> f64 {
        let max_semi = self.lesion.shape.semi.iter().fold(0.0f64, |a, &b| a.max(b));
        let wobble: f64 = self.lesion.bumps.iter().map(|(_, a, _)| a).sum();
        max_semi * (1.0 + wobble + self.oedema.map_or(0.0, |o| o.0))
    }

    /// Multiplicative intensity factor at `p`.
    fn factor(&self, p: Vec3, spacing_mm: f64, texture: &Field) -> f64 {
        let s = self.lesion.inside(p);
        let r = self.lesion.radius_mm;
        // Partial volume over about one voxel.
        let edge = ((s * r / spacing_mm) + 0.5).clamp(0.0, 1.0);
        let outside = match self.oedema {
            Some((w, c)) if s > -w => {
                // Full strength at the tumour's edge, fading out smoothly.
                let x = (1.0 + s / w).clamp(0.0, 1.0);
                1.0 + c * x * x * (3.0 - 2.0 * x)
            }
            _ => 1.0,
        };
        if edge <= 0.0 {
            return outside;
        }
        let hetero = 1.0 + 0.2 * texture.at(p);
        let mut change = self.lesion.contrast * hetero;
        if let Some((w, c)) = self.rim
            && s < w
        {
            change = c * hetero;
        }
        if let Some((from, c)) = self.core
            && s > from
        {
            change = c * hetero;
        }
        let inside = (1.0 + change).max(0.02);
        outside * (1.0 - edge) + inside * edge
    }

    fn info(&self) -> LesionInfo {
        LesionInfo {
            center_mm: self.lesion.shape.center,
            radius_mm: self.lesion.radius_mm,
            contrast: self.lesion.contrast,
            core: self.core,
            rim: self.rim,
            oedema: self.oedema,
        }
    }
}

fn draw_tumour(rng: &mut Rng, config: &AnatomyConfig, center: Vec3, radius: f64) -> Tumour {
    let (axes, semi) = lesion_axes(rng, radius);
    let bumps = lesion_bumps(rng);
    let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
    let contrast = sign * rng.range(config.contrast.0, config.contrast.1);
    let core = (rng.uniform() < config.core_probability)
        .then(|| (rng.range(0.4, 0.6), -rng.range(0.35, 0.6)));
    let rim = (rng.uniform() < config.rim_probability)
        .then(|| (rng.range(0.15, 0.3), rng.range(0.25, 0.5)));
    let oedema = (rng.uniform() < config.oedema_probability)
        .then(|| (rng.range(0.3, 0.8), -rng.range(0.1, 0.25)));
    Tumour {
        lesion: Lesion {
            shape: Ellipsoid { center, axes, semi },
            radius_mm: radius,
            bumps,
            contrast,
        },
        core,
        rim,
        oedema,
    }
}

/// What each case is: its source scan, label and split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasePlan {
    pub source: usize,
    pub positive: bool,
    pub test: bool,
}

/// Assigns sources, labels and splits. Every source gets both labels in
/// turn (so that anatomy alone never tells the label); with
/// `split_by_source` whole sources go to the test split.
pub fn plan(config: &AnatomyConfig, sources: usize) -> Result<Vec<CasePlan>> {
    if sources == 0 {
        return Err(Error::invalid("anatomy", "no source scan"));
    }
    let n = config.cases;
    let mut rng = Rng::fork(config.seed, u64::MAX - 1);
    let assign = |ids: &[usize], count: usize, test: bool| -> Vec<CasePlan> {
        (0..count)
            .map(|i| CasePlan {
                source: ids[i % ids.len()],
                // Alternating per source: each source's first case is positive.
                positive: (i / ids.len()).is_multiple_of(2),
                test,
            })
            .collect()
    };
    let mut plans = if config.split_by_source {
        if sources < 2 {
            return Err(Error::invalid(
                "split by source",
                "needs at least 2 source scans (one for training, one for testing)",
            ));
        }
        let mut ids: Vec<usize> = (0..sources).collect();
        rng.shuffle(&mut ids);
        let n_test_src =
            ((sources as f64 * config.test_fraction).round() as usize).clamp(1, sources - 1);
        let (test_ids, train_ids) = ids.split_at(n_test_src);
        let mut test_ids = test_ids.to_vec();
        let mut train_ids = train_ids.to_vec();
        test_ids.sort_unstable();
        train_ids.sort_unstable();
        // Cases in proportion to the sources in each split.
        let n_test = (n * n_test_src)
            .div_ceil(sources)
            .min(n.saturating_sub(1))
            .max(1);
        let mut p = assign(&train_ids, n - n_test, false);
        p.extend(assign(&test_ids, n_test, true));
        p
    } else {
        let ids: Vec<usize> = (0..sources).collect();
        let mut p = assign(&ids, n, false);
        // Stratified test cases: the first of each label in a shuffled order.
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let n_test = (n as f64 * config.test_fraction).round() as usize;
        for label in [true, false] {
            let want = n_test / 2 + usize::from(label && n_test % 2 == 1);
            let chosen: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| p[i].positive == label)
                .take(want)
                .collect();
            for i in chosen {
                p[i].test = true;
            }
        }
        p
    };
    if config.positive_fraction != 0.5 {
        // Relabel to the asked fraction within each split, keeping sources balanced as far as possible.
        for test in [false, true] {
            let idx: Vec<usize> = (0..plans.len())
                .filter(|&i| plans[i].test == test)
                .collect();
            let n_pos = (idx.len() as f64 * config.positive_fraction).round() as usize;
            for (rank, &i) in idx.iter().enumerate() {
                plans[i].positive = rank < n_pos;
            }
        }
    }
    rng.shuffle(&mut plans);
    Ok(plans)
}

/// Generates case `index` from `sources[plan.source]`.
// Long on purpose: one draw of the case's random stream in a fixed order
// (pose, lesions, bias field, texture, gamma, gain, noise), then the
// resampling that uses all of them; split up, a reordered draw would
// silently change every dataset a seed gives.
pub fn generate_case(
    config: &AnatomyConfig,
    sources: &[Source],
    index: usize,
    plan: CasePlan,
) -> Result<SynthCase> {
    let src = &sources[plan.source];
    let mut rng = Rng::fork(config.seed, index as u64);
    let (n, h) = (config.size, config.spacing_mm);
    let origin = -(n as f64 - 1.0) / 2.0 * h;
    let affine = Affine::from_diagonal([h; 3], [origin; 3]);
    let axis = rng.unit_vector();
    let angle = rng
        .range(-config.max_rotation_deg, config.max_rotation_deg)
        .to_radians();
    let rot = rotation(axis, angle);
    let scale = rng.range(config.scale.0, config.scale.1);
    let shift: Vec3 = {
        let u = rng.unit_vector();
        let r = rng.uniform().cbrt() * config.max_shift_mm;
        u.map(|x| x * r)
    };
    // Output world p -> source world q = c + R^T (p - shift) / scale.
    let to_source = |p: Vec3| -> Vec3 {
        let d = sub(p, shift);
        let back = [0, 1, 2].map(|i| (0..3).map(|r| rot[r][i] * d[r]).sum::<f64>() / scale);
        [0, 1, 2].map(|i| src.center_mm[i] + back[i])
    };
    let voxel_world = |i: usize, j: usize, k: usize| affine.apply([i as f64, j as f64, k as f64]);
    let nnn = n * n * n;
    // Where lesions may go on the output grid (the foreground, within the
    // source's mask if it has one), and how deep each voxel lies in it.
    let fg: Vec<bool> = (0..nnn)
        .into_par_iter()
        .map(|idx| {
            let q = to_source(voxel_world(idx % n, (idx / n) % n, idx / (n * n)));
            src.solid.sample_world(q, 0, 0.0) >= 0.5
                && src
                    .region
                    .as_ref()
                    .is_none_or(|r| r.sample_world(q, 0, 0.0) >= 0.5)
        })
        .collect();
    if fg.iter().all(|m| !m) {
        return Err(Error::dataset(
            &src.path,
            format!(
                "its foreground{} falls outside the {n}^3 grid of {h} mm voxels; \
                 use a larger --size or --spacing",
                if src.region.is_some() {
                    " within its lesion mask"
                } else {
                    ""
                }
            ),
        ));
    }
    let depth = depth_mm(&fg, n, h);
    let tumours = if plan.positive {
        place_tumours(&mut rng, config, &depth, &voxel_world, src)?
    } else {
        Vec::new()
    };
    let bias = Field::new(&mut rng, 6, 250.0, 500.0);
    let texture = Field::new(&mut rng, 12, 4.0, 10.0);
    let gamma = rng.range(-config.gamma, config.gamma).exp();
    let gain = rng.range(0.8, 1.25);
    let noise_seed = rng.next_u64();
    // Sub-samples per axis: a finer source is averaged over each output voxel
    // (partial volume, no aliasing).
    let src_spacing = src.volume.spacing_mm();
    let finest = src_spacing.iter().fold(f64::INFINITY, |a, &b| a.min(b));
    let sub_n = if finest < 0.75 * h { 2 } else { 1 };
    let background = 0.0f32;
    let mut image = vec![0.0f32; nnn];
    let mut mask = vec![0.0f32; nnn];
    image
        .par_chunks_mut(n * n)
        .zip(mask.par_chunks_mut(n * n))
        .enumerate()
        .for_each(|(k, (img, msk))| {
            let mut noise = Rng::fork(noise_seed, k as u64);
            for j in 0..n {
                for i in 0..n {
                    let centre = voxel_world(i, j, k);
                    let mut acc = 0.0f64;
                    for s in 0..sub_n * sub_n * sub_n {
                        let off = |a: usize| {
                            if sub_n == 1 {
                                0.0
                            } else {
                                (a as f64 + 0.5) / sub_n as f64 - 0.5
                            }
                        };
                        let p = [
                            centre[0] + off(s % sub_n) * h,
                            centre[1] + off((s / sub_n) % sub_n) * h,
                            centre[2] + off(s / (sub_n * sub_n)) * h,
                        ];
                        let mut v = src.volume.sample_world(to_source(p), 0, background) as f64;
                        for t in &tumours {
                            v *= t.factor(p, h, &texture);
                        }
                        acc += v;
                    }
                    let mut v = acc / (sub_n * sub_n * sub_n) as f64;
                    // The mask: voxel centres inside a tumour (core and rim included).
                    if tumours.iter().any(|t| t.lesion.inside(centre) > 0.0) {
                        msk[i + n * j] = 1.0;
                    }
                    v *= 1.0 + config.bias * bias.at(centre).clamp(-2.0, 2.0) / 2.0;
                    v = v.max(0.0).powf(gamma);
                    let noisy = (v + config.noise * noise.normal()).abs();
                    img[i + n * j] = (gain * noisy) as f32;
                }
            }
        });
    if plan.positive && mask.iter().all(|&m| m == 0.0) {
        // A lesion smaller than the grid still marks its nearest voxel.
        let c = tumours[0].lesion.shape.center;
        let inv = affine.inverse().expect("diagonal affine");
        let v = inv
            .apply(c)
            .map(|x| (x.round().max(0.0) as usize).min(n - 1));
        mask[v[0] + n * (v[1] + n * v[2])] = 1.0;
    }
    Ok(SynthCase {
        name: super::case_name(index, config.cases),
        image: Volume::new(image, [n; 3], 1, affine)?,
        mask: Volume::new(mask, [n; 3], 1, affine)?,
        lesions: tumours.iter().map(Tumour::info).collect(),
        test: plan.test,
        provenance: Some(serde_json::json!({
            "source": src.name,
            "source_path": src.path,
            "rotation_axis": axis,
            "rotation_deg": angle.to_degrees(),
            "scale": scale,
            "shift_mm": shift,
            "gamma": gamma,
            "gain": gain,
        })),
    })
}

/// Draws the tumours of a positive case, each with its whole extent (and
/// `margin_mm`) inside the foreground (and the source's mask) and apart
/// from the others.
fn place_tumours(
    rng: &mut Rng,
    config: &AnatomyConfig,
    depth: &[f64],
    voxel_world: &dyn Fn(usize, usize, usize) -> Vec3,
    src: &Source,
) -> Result<Vec<Tumour>> {
    let n = config.size;
    let count = config.lesions.0 + rng.below(config.lesions.1 - config.lesions.0 + 1);
    let deepest = depth.iter().fold(0.0f64, |a, &b| a.max(b));
    let mut tumours: Vec<Tumour> = Vec::new();
    for _ in 0..count {
        let (lo, hi) = config.radius_mm;
        let mut radius = rng.range(lo.ln(), hi.ln()).exp();
        let mut placed = None;
        for attempt in 0..60 {
            if attempt % 10 == 9 {
                // No room at this size: a smaller lesion.
                radius = (radius * 0.85).max(0.5 * config.spacing_mm);
            }
            let centre_seed = rng.next_u64();
            let t = draw_tumour(rng, config, [0.0; 3], radius);
            let need = t.extent_mm() + config.margin_mm;
            if need > deepest {
                continue;
            }
            let candidates: Vec<usize> = (0..depth.len()).filter(|&i| depth[i] >= need).collect();
            let mut crng = Rng::new(centre_seed);
            let idx = candidates[crng.below(candidates.len())];
            let c = voxel_world(idx % n, (idx / n) % n, idx / (n * n));
            let jitter = config.spacing_mm * 0.5;
            let center = c.map(|x| x + crng.range(-jitter, jitter));
            let apart = tumours
                .iter()
                .all(|o| norm(sub(o.lesion.shape.center, center)) > o.extent_mm() + t.extent_mm());
            if apart {
                let mut t = t;
                t.lesion.shape.center = center;
                placed = Some(t);
                break;
            }
        }
        match placed {
            Some(t) => tumours.push(t),
            None if !tumours.is_empty() => break,
            None => {
                return Err(Error::dataset(
                    &src.path,
                    format!(
                        "no room for a lesion of {:.1} mm radius (plus {} mm margin) inside its foreground or mask \
                         on the {n}^3 grid (deepest point {deepest:.1} mm); use smaller --radius or --margin",
                        radius, config.margin_mm
                    ),
                ));
            }
        }
    }
    Ok(tumours)
}

/// Writes a dataset of lesions implanted in `sources` in the layout of
/// [`super::write_dataset`]; `synth.json` also lists the sources and, per
/// case, its source scan and transform.
pub fn write_dataset(
    out: &Path,
    config: &AnatomyConfig,
    sources: &[Source],
    overwrite: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<super::CaseRecord>> {
    config.validate()?;
    let plans = plan(config, sources.len())?;
    let meta = serde_json::json!({
        "config": config,
        "anatomy": sources.iter().enumerate().map(|(i, s)| serde_json::json!({
            "name": s.name,
            "path": s.path,
            "shape": s.volume.shape(),
            "spacing_mm": s.volume.spacing_mm(),
            "foreground_voxels": s.foreground_voxels,
            "lesion_mask": s.region_path,
            "test": plans.iter().any(|p| p.source == i && p.test),
        })).collect::<Vec<_>>(),
    });
    super::write_cases(
        out,
        plans.len(),
        &|i| generate_case(config, sources, i, plans[i]),
        (
            "Real healthy scans with implanted lesions, written by `tonno synth --anatomy`",
            meta,
        ),
        overwrite,
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    #[test]
    fn depth_is_the_distance_to_the_edge() {
        // A ball of radius 6 voxels in a 20^3 grid: the centre lies 6-7 voxels deep.
        let n = 20;
        let mask: Vec<bool> = (0..n * n * n)
            .map(|i| {
                let (x, y, z) = (i % n, (i / n) % n, i / (n * n));
                let d2 = [x, y, z]
                    .iter()
                    .map(|&a| (a as f64 - 9.5).powi(2))
                    .sum::<f64>();
                d2 <= 36.0
            })
            .collect();
        let d = depth_mm(&mask, n, 2.0);
        let centre = 9 + n * (9 + n * 9);
        assert!((d[centre] - 2.0 * 6.0).abs() <= 2.0 * 1.5, "{}", d[centre]);
        assert_eq!(d[0], 0.0);
        // Monotone towards the centre along an axis.
        let row: Vec<f64> = (4..10).map(|x| d[x + n * (9 + n * 9)]).collect();
        assert!(row.windows(2).all(|w| w[1] >= w[0]), "{row:?}");
    }

    #[test]
    fn holes_are_filled_but_the_outside_is_not() {
        let n = 9;
        let mut mask = vec![false; n * n * n];
        for k in 2..7 {
            for j in 2..7 {
                for i in 2..7 {
                    let shell = [i, j, k].iter().any(|&a| a == 2 || a == 6);
                    mask[i + n * (j + n * k)] = shell;
                }
            }
        }
        let solid = fill_holes(&mask, [n; 3]);
        assert!(solid[4 + n * (4 + n * 4)]);
        assert!(!solid[0] && !solid[1 + n * (4 + n * 4)]);
    }

    #[test]
    fn rotation_is_orthonormal_and_turns_by_its_angle() {
        let r = rotation([0.0, 0.0, 1.0], PI / 2.0);
        let x = [0, 1, 2].map(|i| dot(r[i], [1.0, 0.0, 0.0]));
        assert!((x[1] - 1.0).abs() < 1e-12 && x[0].abs() < 1e-12);
        let axis = [0.6, 0.0, 0.8];
        let r = rotation(axis, 0.7);
        for a in 0..3 {
            for b in 0..3 {
                let d = dot(r[a], r[b]);
                assert!((d - (a == b) as u8 as f64).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn plans_balance_labels_per_source_and_split_by_source() {
        let config = AnatomyConfig {
            cases: 40,
            split_by_source: true,
            ..AnatomyConfig::default()
        };
        let p = plan(&config, 5).unwrap();
        assert_eq!(p.len(), 40);
        for s in 0..5 {
            let mine: Vec<_> = p.iter().filter(|c| c.source == s).collect();
            assert!(
                mine.iter().all(|c| c.test == mine[0].test),
                "source {s} in both splits"
            );
            let pos = mine.iter().filter(|c| c.positive).count();
            assert!(
                pos.abs_diff(mine.len() - pos) <= 1,
                "source {s}: {pos} of {}",
                mine.len()
            );
        }
        let tests = p.iter().filter(|c| c.test).count();
        assert!((8..=16).contains(&tests), "{tests}");
        assert!(
            plan(
                &AnatomyConfig {
                    split_by_source: true,
                    ..config
                },
                1
            )
            .is_err()
        );
    }
}
