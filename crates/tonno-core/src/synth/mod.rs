//! Synthetic head-like scans with lesions, for tests, benchmarks and the demo.
//!
//! A case is an MRI-like head in a 192 mm field of view: scalp, skull, CSF,
//! a folded cortex of grey matter over white matter, ventricles and deep
//! nuclei, with tissue texture, a smooth multiplicative bias field, Gaussian
//! noise and a random scanner gain. About half of the cases hold one to
//! three lesions, irregular in shape, from a few voxels to a few
//! centimetres, brighter or darker than the tissue around them by about as
//! much as grey and white matter differ. Everything is fixed by the seed.
//!
//! Units: mm in RAS+ world coordinates; the volume is `size^3` voxels of
//! `192 / size` mm, centred on the world origin.

use std::f64::consts::PI;

use crate::affine::{Affine, Vec3, dot, norm, sub};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::volume::Volume;

pub mod anatomy;

/// Field of view of every synthetic case, in mm.
pub const FOV_MM: f64 = 192.0;

/// Options of the generator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SynthConfig {
    /// Voxels per side.
    pub size: usize,
    /// Number of cases.
    pub cases: usize,
    /// Master seed: case `i` draws from `Rng::fork(seed, i)`.
    pub seed: u64,
    /// Fraction of cases with lesions (rounded, at least one of each class
    /// when there are two cases or more).
    pub positive_fraction: f64,
    /// Fraction of cases put in the test split.
    pub test_fraction: f64,
    /// Standard deviation of the Gaussian noise, relative to white matter.
    pub noise: f64,
    /// Range of a lesion's relative intensity change (its sign is random).
    pub contrast: (f64, f64),
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            size: 48,
            cases: 20,
            seed: 0,
            positive_fraction: 0.5,
            test_fraction: 0.25,
            noise: 0.04,
            contrast: (0.15, 0.35),
        }
    }
}

/// One lesion as drawn (for reports and tests): centre in world mm and mean radius.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LesionInfo {
    pub center_mm: Vec3,
    pub radius_mm: f64,
    /// Relative intensity change (positive: brighter).
    pub contrast: f64,
    /// A necrotic core: its share of the radius and its relative intensity change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<(f64, f64)>,
    /// A rim: its width as a share of the radius and its relative intensity change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rim: Option<(f64, f64)>,
    /// Oedema around the lesion (outside its mask): its width as a share of
    /// the radius and its relative intensity change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oedema: Option<(f64, f64)>,
}

/// A generated case.
#[derive(Debug, Clone)]
pub struct SynthCase {
    pub name: String,
    pub image: Volume,
    /// 1 inside a lesion, 0 elsewhere.
    pub mask: Volume,
    pub lesions: Vec<LesionInfo>,
    /// In the test split (`imagesTs`) rather than training (`imagesTr`).
    pub test: bool,
    /// What the case was made from beyond its lesions (for `synth.json`):
    /// the source scan and its transform, for cases made from real anatomy.
    pub provenance: Option<serde_json::Value>,
}

impl SynthCase {
    /// The image-level label: does the case hold a lesion?
    pub fn label(&self) -> bool {
        !self.lesions.is_empty()
    }
}

/// A smooth random field: a sum of plane waves with random directions,
/// wavelengths in `[lo_mm, hi_mm]` and phases; unit amplitude on average.
#[derive(Debug, Clone)]
struct Field {
    waves: Vec<(Vec3, f64)>,
}

impl Field {
    fn new(rng: &mut Rng, count: usize, lo_mm: f64, hi_mm: f64) -> Self {
        let waves = (0..count)
            .map(|_| {
                let d = rng.unit_vector();
                let k = 2.0 * PI / rng.range(lo_mm, hi_mm);
                ([d[0] * k, d[1] * k, d[2] * k], rng.range(0.0, 2.0 * PI))
            })
            .collect();
        Self { waves }
    }

    fn at(&self, p: Vec3) -> f64 {
        let s: f64 = self
            .waves
            .iter()
            .map(|(k, ph)| (dot(*k, p) + ph).cos())
            .sum();
        s * (2.0 / self.waves.len() as f64).sqrt()
    }
}

/// An ellipsoid with arbitrary axes: `|R^T (p - c) / semi| <= 1`.
#[derive(Debug, Clone)]
struct Ellipsoid {
    center: Vec3,
    axes: [Vec3; 3],
    semi: Vec3,
}

impl Ellipsoid {
    fn random_axes(rng: &mut Rng, max_angle: f64) -> [Vec3; 3] {
        // Small random rotation: Rodrigues around a random axis.
        let axis = rng.unit_vector();
        let angle = rng.range(-max_angle, max_angle);
        let (s, c) = angle.sin_cos();
        let rot = |v: Vec3| {
            let k = axis;
            let kxv = crate::affine::cross(k, v);
            let kv = dot(k, v);
            [0, 1, 2].map(|i| v[i] * c + kxv[i] * s + k[i] * kv * (1.0 - c))
        };
        [
            rot([1.0, 0.0, 0.0]),
            rot([0.0, 1.0, 0.0]),
            rot([0.0, 0.0, 1.0]),
        ]
    }

    /// Normalised radius: 1 on the surface.
    fn rho(&self, p: Vec3) -> f64 {
        let d = sub(p, self.center);
        let q = [0, 1, 2].map(|a| dot(d, self.axes[a]) / self.semi[a]);
        norm(q)
    }

    /// Approximate depth below the surface, in mm (negative outside).
    fn depth_mm(&self, p: Vec3) -> f64 {
        let mean_semi = (self.semi[0] + self.semi[1] + self.semi[2]) / 3.0;
        (1.0 - self.rho(p)) * mean_semi
    }
}

#[derive(Debug, Clone)]
struct Lesion {
    shape: Ellipsoid,
    radius_mm: f64,
    bumps: Vec<(Vec3, f64, f64)>,
    contrast: f64,
}

impl Lesion {
    /// Signed "inside-ness": > 0 inside, in units of the lesion radius.
    fn inside(&self, p: Vec3) -> f64 {
        let d = sub(p, self.shape.center);
        let l = norm(d);
        let dir = if l > 0.0 {
            [d[0] / l, d[1] / l, d[2] / l]
        } else {
            [0.0, 0.0, 1.0]
        };
        // Irregular outline: the radius varies smoothly with direction.
        let wobble: f64 = self
            .bumps
            .iter()
            .map(|(q, a, ph)| a * (dot(*q, dir) + ph).sin())
            .sum();
        1.0 + wobble - self.shape.rho(p)
    }
}

struct Head {
    skull_outer: Ellipsoid,
    brain: Ellipsoid,
    ventricles: [Ellipsoid; 2],
    nuclei: [Ellipsoid; 2],
    folding: Field,
    texture: Field,
    bias: Field,
    lesion_texture: Field,
    gain: f64,
    offset: f64,
}

fn draw_head(rng: &mut Rng) -> Head {
    let axes = Ellipsoid::random_axes(rng, 8f64.to_radians());
    let jitter = |rng: &mut Rng| rng.range(0.93, 1.07);
    let semi = [72.0 * jitter(rng), 88.0 * jitter(rng), 74.0 * jitter(rng)];
    let center = [
        rng.range(-4.0, 4.0),
        rng.range(-4.0, 4.0),
        rng.range(-4.0, 4.0),
    ];
    let skull_outer = Ellipsoid { center, axes, semi };
    let brain = Ellipsoid {
        center,
        axes,
        semi: semi.map(|s| s - 11.0),
    };
    let along = |e: &Ellipsoid, off: Vec3| -> Vec3 {
        [0, 1, 2]
            .map(|i| e.center[i] + off[0] * axes[0][i] + off[1] * axes[1][i] + off[2] * axes[2][i])
    };
    let vsemi = [
        rng.range(5.0, 8.0),
        rng.range(18.0, 26.0),
        rng.range(7.0, 11.0),
    ];
    let ventricles = [-1.0, 1.0].map(|side| Ellipsoid {
        center: along(
            &brain,
            [
                side * rng.range(7.0, 10.0),
                rng.range(-4.0, 4.0),
                rng.range(2.0, 8.0),
            ],
        ),
        axes,
        semi: vsemi,
    });
    let nsemi = [
        rng.range(6.0, 9.0),
        rng.range(9.0, 13.0),
        rng.range(7.0, 10.0),
    ];
    let nuclei = [-1.0, 1.0].map(|side| Ellipsoid {
        center: along(
            &brain,
            [
                side * rng.range(20.0, 25.0),
                rng.range(-6.0, 2.0),
                rng.range(-6.0, 0.0),
            ],
        ),
        axes,
        semi: nsemi,
    });
    Head {
        skull_outer,
        brain,
        ventricles,
        nuclei,
        folding: Field::new(rng, 24, 12.0, 26.0),
        texture: Field::new(rng, 24, 5.0, 14.0),
        bias: Field::new(rng, 6, 250.0, 500.0),
        lesion_texture: Field::new(rng, 12, 4.0, 10.0),
        gain: rng.range(0.8, 1.25),
        offset: rng.range(-0.05, 0.1),
    }
}

/// A lesion's random orientation and semi-axes (volume of a ball of `radius`).
fn lesion_axes(rng: &mut Rng, radius: f64) -> ([Vec3; 3], Vec3) {
    let axes = Ellipsoid::random_axes(rng, PI);
    let stretch = [
        rng.range(0.75, 1.3),
        rng.range(0.75, 1.3),
        rng.range(0.75, 1.3),
    ];
    let g = (stretch[0] * stretch[1] * stretch[2]).cbrt();
    (axes, stretch.map(|s| radius * s / g))
}

/// The smooth bumps of a lesion's irregular outline: at most 5 x 9% of its radius.
fn lesion_bumps(rng: &mut Rng) -> Vec<(Vec3, f64, f64)> {
    (0..5)
        .map(|_| {
            let q = rng.unit_vector();
            let f = rng.range(1.5, 3.5);
            (
                [q[0] * f, q[1] * f, q[2] * f],
                rng.range(0.03, 0.09),
                rng.range(0.0, 2.0 * PI),
            )
        })
        .collect()
}

fn draw_lesion(rng: &mut Rng, head: &Head, spacing_mm: f64, contrast: (f64, f64)) -> Lesion {
    // Log-uniform radius: small lesions are as common as large ones.
    let r_min = (1.6 * spacing_mm).max(3.0);
    let r_max = 22.0f64.max(r_min * 1.5);
    let radius = (rng.range(r_min.ln(), r_max.ln())).exp();
    let (axes, semi) = lesion_axes(rng, radius);
    // Centre well inside the brain: the normalised brain radius leaves room
    // for the lesion's extent.
    let center = loop {
        let u = rng.unit_vector();
        let r = rng.uniform().cbrt() * 0.85;
        let b = &head.brain;
        let p: Vec3 = [0, 1, 2].map(|i| {
            b.center[i]
                + (0..3)
                    .map(|a| u[a] * r * b.semi[a] * b.axes[a][i])
                    .sum::<f64>()
        });
        if head.brain.depth_mm(p) > radius * 1.4 + 3.0 {
            break p;
        }
    };
    let bumps = lesion_bumps(rng);
    let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
    Lesion {
        shape: Ellipsoid { center, axes, semi },
        radius_mm: radius,
        bumps,
        contrast: sign * rng.range(contrast.0, contrast.1),
    }
}

/// Tissue intensity (before lesions, bias, noise and gain) at world point `p`.
fn tissue(head: &Head, p: Vec3) -> f64 {
    let depth_skull = head.skull_outer.depth_mm(p);
    if depth_skull < 0.0 {
        return 0.0; // air
    }
    if depth_skull < 4.0 {
        return 0.55 + 0.05 * head.texture.at(p); // scalp
    }
    if depth_skull < 9.5 {
        return 0.12 + 0.03 * head.texture.at(p); // skull (dark, as in T1 MRI)
    }
    let depth = head.brain.depth_mm(p);
    if depth < 1.5 {
        return 0.25; // CSF
    }
    if head.ventricles.iter().any(|v| v.rho(p) < 1.0) {
        return 0.22 + 0.02 * head.texture.at(p);
    }
    if head.nuclei.iter().any(|n| n.rho(p) < 1.0) {
        return 0.66 + 0.03 * head.texture.at(p);
    }
    // Folded cortex: the grey/white boundary lies 2 to 16 mm deep, and CSF
    // fills the sulci where a second field peaks.
    let fold = head.folding.at(p).clamp(-1.5, 1.5);
    let gw = 9.0 + 5.0 * fold;
    let t = head.texture.at(p);
    if depth < gw {
        if head.folding.at([p[1], p[2], p[0]]) > 0.9 && depth < 0.8 * gw {
            return 0.3 + 0.02 * t;
        }
        0.58 + 0.04 * t
    } else {
        0.8 + 0.03 * t + 0.03 * head.folding.at([p[2], p[0], p[1]])
    }
}

/// A case's name: `case_` and its index, zero-padded to the width of the
/// last index (at least 3 digits, `case_007`), so that names sort as the
/// cases do in a set of 1000 or more too (`case_0999` before `case_1000`;
/// tonno and other tools order cases by name).
pub(crate) fn case_name(index: usize, cases: usize) -> String {
    let width = cases.saturating_sub(1).to_string().len().max(3);
    format!("case_{index:0width$}")
}

/// Generates case `index` of a dataset (deterministic in `seed` and `index`).
pub fn generate_case(
    config: &SynthConfig,
    index: usize,
    positive: bool,
    test: bool,
) -> Result<SynthCase> {
    let size = config.size;
    if size < 8 {
        return Err(Error::invalid(
            "size",
            format!("{size} voxels per side; use at least 8"),
        ));
    }
    let mut rng = Rng::fork(config.seed, index as u64);
    let spacing = FOV_MM / size as f64;
    let origin = -(size as f64 - 1.0) / 2.0 * spacing;
    let affine = Affine::from_diagonal([spacing; 3], [origin; 3]);
    let head = draw_head(&mut rng);
    let lesions: Vec<Lesion> = if positive {
        let n = 1 + rng.below(3);
        (0..n)
            .map(|_| draw_lesion(&mut rng, &head, spacing, config.contrast))
            .collect()
    } else {
        Vec::new()
    };
    let noise_seed = rng.next_u64();
    let n = size * size * size;
    let mut image = vec![0.0f32; n];
    let mut mask = vec![0.0f32; n];
    // Per-slab RNGs keep the noise reproducible whatever the thread count.
    use rayon::prelude::*;
    image
        .par_chunks_mut(size * size)
        .zip(mask.par_chunks_mut(size * size))
        .enumerate()
        .for_each(|(k, (img, msk))| {
            let mut noise = Rng::fork(noise_seed, k as u64);
            for j in 0..size {
                for i in 0..size {
                    let p = affine.apply([i as f64, j as f64, k as f64]);
                    let mut v = tissue(&head, p);
                    for l in &lesions {
                        let s = l.inside(p);
                        // Soft edge over about one voxel: partial-volume look.
                        let edge = ((s * l.radius_mm / spacing) + 0.5).clamp(0.0, 1.0);
                        if edge > 0.0 {
                            let hetero = 1.0 + 0.25 * head.lesion_texture.at(p);
                            v *= 1.0 + l.contrast * hetero * edge;
                        }
                        if s > 0.0 {
                            msk[i + size * j] = 1.0;
                        }
                    }
                    let bias = 1.0 + 0.12 * head.bias.at(p);
                    let noisy = v * bias + config.noise * noise.normal();
                    // Magnitude images are non-negative (Rician-like floor).
                    img[i + size * j] = (head.gain * noisy.abs() + head.offset).max(0.0) as f32;
                }
            }
        });
    let mut lesion_infos: Vec<LesionInfo> = lesions
        .iter()
        .map(|l| LesionInfo {
            center_mm: l.shape.center,
            radius_mm: l.radius_mm,
            contrast: l.contrast,
            core: None,
            rim: None,
            oedema: None,
        })
        .collect();
    if positive && mask.iter().all(|&m| m == 0.0) {
        // A lesion smaller than the grid still marks its nearest voxel.
        let c = lesions[0].shape.center;
        let inv = affine.inverse().expect("diagonal affine");
        let v = inv
            .apply(c)
            .map(|x| (x.round().max(0.0) as usize).min(size - 1));
        mask[v[0] + size * (v[1] + size * v[2])] = 1.0;
    }
    if !positive {
        lesion_infos.clear();
    }
    Ok(SynthCase {
        name: case_name(index, config.cases),
        image: Volume::new(image, [size; 3], 1, affine)?,
        mask: Volume::new(mask, [size; 3], 1, affine)?,
        lesions: lesion_infos,
        test,
        provenance: None,
    })
}

/// Which cases are positive and which are in the test split: exact
/// fractions, both classes in each split where the counts allow, shuffled
/// by the seed.
pub fn plan(config: &SynthConfig) -> Vec<(bool, bool)> {
    plan_split(
        config.cases,
        config.positive_fraction,
        config.test_fraction,
        config.seed,
    )
}

/// [`plan`] for `n` cases: `(positive, test)` per case.
pub(crate) fn plan_split(
    n: usize,
    positive_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Vec<(bool, bool)> {
    let mut rng = Rng::fork(seed, u64::MAX);
    let mut n_pos = (n as f64 * positive_fraction).round() as usize;
    if n >= 2 {
        n_pos = n_pos.clamp(1, n - 1);
    }
    let n_test = ((n as f64 * test_fraction).round() as usize).min(n.saturating_sub(2));
    // Stratified: split positives and negatives separately.
    let n_test_pos = ((n_test as f64) * n_pos as f64 / n.max(1) as f64).round() as usize;
    let n_test_pos = n_test_pos.min(n_pos.saturating_sub(1)).min(n_test);
    let n_test_neg = (n_test - n_test_pos).min((n - n_pos).saturating_sub(1));
    let mut flags: Vec<(bool, bool)> = (0..n)
        .map(|i| {
            let positive = i < n_pos;
            let test = if positive {
                i < n_test_pos
            } else {
                i - n_pos < n_test_neg
            };
            (positive, test)
        })
        .collect();
    rng.shuffle(&mut flags);
    flags
}

/// Generates all cases of a dataset.
pub fn generate(config: &SynthConfig) -> Result<Vec<SynthCase>> {
    plan(config)
        .into_iter()
        .enumerate()
        .map(|(i, (positive, test))| generate_case(config, i, positive, test))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            size: 24,
            cases: 8,
            seed: 3,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn case_names_sort_as_their_indices_do_in_sets_of_any_size() {
        assert_eq!(case_name(7, 8), "case_007");
        assert_eq!(case_name(999, 1000), "case_999");
        assert_eq!(case_name(7, 1120), "case_0007");
        for cases in [1, 8, 1000, 1001, 1120, 12_000] {
            let names: Vec<String> = (0..cases).map(|i| case_name(i, cases)).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "{cases} cases");
        }
    }

    #[test]
    fn same_seed_same_voxels_and_other_seed_differs() {
        let a = generate_case(&small(), 2, true, false).unwrap();
        let b = generate_case(&small(), 2, true, false).unwrap();
        assert_eq!(a.image.data(), b.image.data());
        assert_eq!(a.mask.data(), b.mask.data());
        let c = generate_case(&SynthConfig { seed: 4, ..small() }, 2, true, false).unwrap();
        assert_ne!(a.image.data(), c.image.data());
    }

    #[test]
    fn masks_are_non_empty_exactly_for_positive_cases() {
        let cfg = SynthConfig {
            cases: 10,
            ..small()
        };
        let cases = generate(&cfg).unwrap();
        let positives = cases.iter().filter(|c| c.label()).count();
        assert_eq!(positives, 5);
        for c in &cases {
            let lesion_voxels = c.mask.data().iter().filter(|&&m| m > 0.0).count();
            assert_eq!(lesion_voxels > 0, c.label(), "{}", c.name);
        }
        // Both classes in both splits.
        for test in [false, true] {
            let split: Vec<_> = cases.iter().filter(|c| c.test == test).collect();
            assert!(split.iter().any(|c| c.label()) && split.iter().any(|c| !c.label()));
        }
    }

    #[test]
    fn lesion_contrast_is_comparable_to_tissue_contrast() {
        // The task must not be trivial: a lesion's mean intensity differs from
        // the brain around it by less than the grey/white difference's 2x,
        // and lies inside the image's intensity range, not above it.
        let cfg = SynthConfig {
            size: 48,
            ..small()
        };
        let case = generate_case(&cfg, 1, true, false).unwrap();
        let img = case.image.data();
        let msk = case.mask.data();
        let (lo, hi) = case.image.intensity_range();
        let inside: Vec<f32> = img
            .iter()
            .zip(msk)
            .filter(|(_, m)| **m > 0.0)
            .map(|(v, _)| *v)
            .collect();
        let mean_in = inside.iter().sum::<f32>() / inside.len() as f32;
        assert!(
            mean_in > lo + 0.1 * (hi - lo) && mean_in < hi - 0.1 * (hi - lo),
            "{mean_in} in [{lo}, {hi}]"
        );
        for l in &case.lesions {
            assert!(l.contrast.abs() >= 0.15 && l.contrast.abs() <= 0.35);
        }
    }
}

/// What [`write_dataset`] wrote for one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseRecord {
    pub name: String,
    pub label: bool,
    pub split: &'static str,
    pub lesions: Vec<LesionInfo>,
    pub lesion_voxels: usize,
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub provenance: Option<serde_json::Value>,
}

/// Writes a synthetic dataset in the Decathlon layout (`imagesTr/`,
/// `labelsTr/`, `imagesTs/`, `labelsTs/`, `dataset.json`) plus `labels.csv`
/// and `synth.json` (the config and every lesion). Refuses a non-empty
/// folder unless `overwrite`. `progress(done, total)` is called after each case.
pub fn write_dataset(
    out: &std::path::Path,
    config: &SynthConfig,
    overwrite: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<CaseRecord>> {
    let flags = plan(config);
    let meta = serde_json::json!({ "config": config });
    let description = "Synthetic head-like MRI with lesions, written by `tonno synth`";
    write_cases(
        out,
        flags.len(),
        &|i| generate_case(config, i, flags[i].0, flags[i].1),
        (description, meta),
        overwrite,
        progress,
    )
}

/// Refuses a non-empty `out` unless `overwrite`, and makes the layout's
/// image and label folders.
fn dataset_folders(out: &std::path::Path, overwrite: bool) -> Result<()> {
    let non_empty = out.is_dir()
        && std::fs::read_dir(out)
            .map_err(|source| Error::Read {
                path: out.to_path_buf(),
                source,
            })?
            .next()
            .is_some();
    if (non_empty || out.is_file()) && !overwrite {
        return Err(Error::Exists {
            path: out.to_path_buf(),
        });
    }
    for sub in ["imagesTr", "labelsTr", "imagesTs", "labelsTs"] {
        let d = out.join(sub);
        std::fs::create_dir_all(&d).map_err(|source| Error::Write { path: d, source })?;
    }
    Ok(())
}

/// Writes `cases` cases made by `generate(i)` in the layout of
/// [`write_dataset`]; `synth.json` holds `meta` (an object) and the cases.
pub(crate) fn write_cases(
    out: &std::path::Path,
    cases: usize,
    generate: &(dyn Fn(usize) -> Result<SynthCase> + Sync),
    (description, meta): (&str, serde_json::Value),
    overwrite: bool,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<CaseRecord>> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::io::{DataType, write_image};

    if cases == 0 {
        return Err(Error::invalid("cases", "0; ask for at least one case"));
    }
    dataset_folders(out, overwrite)?;
    let done = AtomicUsize::new(0);
    let records: Vec<CaseRecord> = (0..cases)
        .into_par_iter()
        .map(|i| {
            let case = generate(i)?;
            let (img_dir, lbl_dir) = if case.test {
                ("imagesTs", "labelsTs")
            } else {
                ("imagesTr", "labelsTr")
            };
            let file = format!("{}.nii.gz", case.name);
            write_image(
                &out.join(img_dir).join(&file),
                &case.image,
                DataType::F32,
                None,
                overwrite,
            )?;
            write_image(
                &out.join(lbl_dir).join(&file),
                &case.mask,
                DataType::U8,
                None,
                overwrite,
            )?;
            progress(done.fetch_add(1, Ordering::Relaxed) + 1, cases);
            Ok(CaseRecord {
                lesion_voxels: case.mask.data().iter().filter(|&&m| m > 0.0).count(),
                label: case.label(),
                split: if case.test { "test" } else { "train" },
                lesions: case.lesions,
                name: case.name,
                provenance: case.provenance,
            })
        })
        .collect::<Result<_>>()?;
    let train: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| {
            serde_json::json!({
                "image": format!("./imagesTr/{}.nii.gz", r.name),
                "label": format!("./labelsTr/{}.nii.gz", r.name),
            })
        })
        .collect();
    let test: Vec<String> = records
        .iter()
        .filter(|r| r.split == "test")
        .map(|r| format!("./imagesTs/{}.nii.gz", r.name))
        .collect();
    let dataset = serde_json::json!({
        "name": "tonno-synth",
        "description": description,
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "lesion"},
        "numTraining": train.len(),
        "numTest": test.len(),
        "training": train,
        "test": test,
    });
    let write_json = |name: &str, value: &serde_json::Value| -> Result<()> {
        let p = out.join(name);
        let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
        crate::io::write_text(&p, &text, overwrite)
    };
    write_json("dataset.json", &dataset)?;
    let mut synth = meta;
    synth["cases"] = serde_json::to_value(&records).expect("records serialise");
    write_json("synth.json", &synth)?;
    let rows: Vec<(String, bool)> = records.iter().map(|r| (r.name.clone(), r.label)).collect();
    let subjects: Option<Vec<String>> = records
        .iter()
        .map(|r| {
            r.provenance
                .as_ref()
                .and_then(|p| p.get("source"))
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .collect();
    crate::io::dataset::write_labels_csv(
        &out.join("labels.csv"),
        &rows,
        subjects.as_deref(),
        overwrite,
    )?;
    Ok(records)
}
