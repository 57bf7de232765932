//! Intensity normalisation of a volume before slicing, and the foreground
//! (the body, not the air around it) that training and the reconstruction
//! ball can be fitted to.
//!
//! MRI intensities have no absolute scale, so the default is a robust
//! z-score over the foreground of each channel (its median and median
//! absolute deviation, which a lesion hardly moves); CT has Hounsfield units,
//! so a fixed window suits it better.

use serde::{Deserialize, Serialize};

use crate::affine::{Vec3, norm, sub};
use crate::error::{Error, Result};
use crate::geometry::Ball;
use crate::volume::Volume;

/// How intensities are mapped before slicing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Normalization {
    /// Per channel: subtract the foreground's mean and divide by its standard deviation.
    ZscoreForeground,
    /// Per channel: subtract the foreground's median and divide by its
    /// median absolute deviation (times 1.4826, the standard deviation of a
    /// normal distribution with that deviation). A lesion is a small share of
    /// the foreground, so it hardly moves either, while it widens the
    /// standard deviation that `ZscoreForeground` divides by and so rescales
    /// the whole scan, air and healthy tissue included, by whether the scan
    /// has a lesion.
    #[default]
    RobustZscoreForeground,
    /// Per channel: z-score over all voxels.
    Zscore,
    /// Per channel: `(x / m - 1) / 0.25`, with `m` the foreground's median:
    /// each intensity as a ratio to the typical tissue's. A skull, scalp or
    /// neck in the field of view widens the foreground's standard deviation
    /// but hardly moves its median, so a lesion 40% brighter than its
    /// surroundings keeps about the same step whether the scan was
    /// skull-stripped or not. 0.25 is the spread of T1 heads' foregrounds in
    /// these units, so that the augmentation's normalised units stay about
    /// those of a z-score. Needs positive intensities (MRI magnitudes).
    MedianForeground,
    /// CT window `center +- width / 2` (HU) mapped to `[-1, 1]`, clipped.
    CtWindow { center: f32, width: f32 },
    /// Leave intensities as they are.
    None,
}

/// The median absolute deviation of a normal distribution times this is
/// its standard deviation.
const MAD_TO_STD: f32 = 1.4826;

/// The foreground spread, in ratio units, that `MedianForeground` divides by.
const MEDIAN_RATIO_SPREAD: f32 = 0.25;

/// The `q`-quantile (0..=1) of `values` (copies and partially sorts).
pub fn quantile(values: &[f32], q: f64) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    let mut v = values.to_vec();
    let idx = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    let (_, x, _) = v.select_nth_unstable_by(idx, |a, b| a.total_cmp(b));
    *x
}

/// The median of `data` where `mask` is set (NaN when it is set nowhere).
pub fn masked_median(data: &[f32], mask: &[bool]) -> f32 {
    quantile(&masked(data, mask).collect::<Vec<_>>(), 0.5)
}

/// The values of `data` where `mask` is set, in order.
fn masked<'a>(data: &'a [f32], mask: &'a [bool]) -> impl Iterator<Item = f32> + Clone + 'a {
    data.iter().zip(mask).filter(|(_, m)| **m).map(|(v, _)| *v)
}

/// Foreground of channel `c`: voxels above Otsu's threshold (the split of
/// the intensity histogram that best separates two classes), which parts
/// tissue from air in MRI and CT alike, whatever the scanner's offset.
pub fn foreground_mask(volume: &Volume, c: usize) -> Vec<bool> {
    let data = volume.channel(c);
    let threshold = otsu_threshold(data);
    data.iter().map(|&v| v > threshold).collect()
}

/// Otsu's threshold over a 256-bin histogram between the 0.5th and 99.5th
/// percentiles.
pub fn otsu_threshold(data: &[f32]) -> f32 {
    const BINS: usize = 256;
    let lo = quantile(data, 0.005);
    let hi = quantile(data, 0.995);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return lo;
    }
    let width = (hi - lo) / BINS as f32;
    let mut hist = [0u64; BINS];
    for &v in data {
        let b = (((v - lo) / width) as isize).clamp(0, BINS as isize - 1) as usize;
        hist[b] += 1;
    }
    let total: u64 = hist.iter().sum();
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &h)| i as f64 * h as f64)
        .sum();
    let (mut w0, mut sum0) = (0u64, 0.0f64);
    let (mut best, mut best_var) = (0usize, -1.0f64);
    for (i, &h) in hist.iter().enumerate() {
        w0 += h;
        sum0 += i as f64 * h as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let m0 = sum0 / w0 as f64;
        let m1 = (sum_all - sum0) / w1 as f64;
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if between > best_var {
            best_var = between;
            best = i;
        }
    }
    lo + (best as f32 + 1.0) * width
}

/// The foreground of all channels together (any channel above its threshold).
pub fn foreground(volume: &Volume) -> Vec<bool> {
    let mut mask = foreground_mask(volume, 0);
    for c in 1..volume.channels() {
        for (m, f) in mask.iter_mut().zip(foreground_mask(volume, c)) {
            *m |= f;
        }
    }
    mask
}

/// How far [`body_mask`] reaches past the foreground's edge, in voxels: a
/// dark lesion at the surface of the head falls below Otsu's threshold and
/// opens onto the air, where filling holes cannot reach it. On the synthetic
/// phantoms up to 7 lesion voxels of 115 were left out without a margin and
/// none with one voxel; on the real-anatomy benchmark a 10 mm margin (3
/// voxels) let streaks in the air back in (ToNNO's Dice at the validation
/// threshold 0.246, against 0.291 without a margin).
pub const BODY_MARGIN_VOXELS: f64 = 1.0;

/// The body: the foreground of all channels with its holes filled (dark
/// tissue inside the head, such as ventricles, a necrotic tumour core or the
/// skull's band under the scalp, is inside it), grown by `margin_voxels`
/// of its largest voxel side (a box of that half-width); the air farther out
/// is not in it.
pub fn body_mask(volume: &Volume, margin_voxels: f64) -> Vec<bool> {
    let filled = fill_holes(&foreground(volume), volume.shape());
    let s = volume.spacing_mm();
    let margin_mm = margin_voxels * s[0].max(s[1]).max(s[2]);
    dilate_box(&filled, volume.shape(), s, margin_mm)
}

/// `mask` grown by `margin_mm` along each voxel axis (a separable running
/// maximum, so a box of half-width `margin_mm`, rounded up to whole voxels).
pub fn dilate_box(mask: &[bool], shape: [usize; 3], spacing_mm: Vec3, margin_mm: f64) -> Vec<bool> {
    let mut out = mask.to_vec();
    let stride = [1, shape[0], shape[0] * shape[1]];
    for axis in 0..3 {
        let r = (margin_mm.max(0.0) / spacing_mm[axis]).ceil() as usize;
        if r == 0 {
            continue;
        }
        let n = shape[axis];
        let src = out.clone();
        for (idx, o) in out.iter_mut().enumerate() {
            if *o {
                continue;
            }
            let t = (idx / stride[axis]) % n;
            let base = idx - t * stride[axis];
            let (lo, hi) = (t.saturating_sub(r), (t + r).min(n - 1));
            *o = (lo..=hi).any(|u| src[base + u * stride[axis]]);
        }
    }
    out
}

/// The mask with every background region that does not reach the grid's
/// border filled (ventricles, sulci, the skull's dark band under the scalp).
pub fn fill_holes(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = shape;
    let mut outside = vec![false; mask.len()];
    let mut stack = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let border =
                    i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1;
                let idx = i + nx * (j + ny * k);
                if border && !mask[idx] {
                    outside[idx] = true;
                    stack.push(idx);
                }
            }
        }
    }
    while let Some(idx) = stack.pop() {
        let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
        let mut visit = |ii: usize, jj: usize, kk: usize| {
            let n = ii + nx * (jj + ny * kk);
            if !mask[n] && !outside[n] {
                outside[n] = true;
                stack.push(n);
            }
        };
        if i > 0 {
            visit(i - 1, j, k);
        }
        if i + 1 < nx {
            visit(i + 1, j, k);
        }
        if j > 0 {
            visit(i, j - 1, k);
        }
        if j + 1 < ny {
            visit(i, j + 1, k);
        }
        if k > 0 {
            visit(i, j, k - 1);
        }
        if k + 1 < nz {
            visit(i, j, k + 1);
        }
    }
    outside.iter().map(|o| !o).collect()
}

/// The smallest ball centred on the foreground's centroid that holds 99.5% of
/// its voxels (robust to a few stray bright voxels), plus half a voxel
/// diagonal. Falls back to [`Ball::covering`] when there is no foreground.
pub fn foreground_ball(volume: &Volume, mask: &[bool]) -> Ball {
    let [nx, ny, _] = volume.shape();
    let points: Vec<Vec3> = mask
        .iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(idx, _)| {
            let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
            volume.voxel_to_world([i as f64, j as f64, k as f64])
        })
        .collect();
    if points.is_empty() {
        return Ball::covering(volume);
    }
    let n = points.len() as f64;
    let c = [0, 1, 2].map(|a| points.iter().map(|p| p[a]).sum::<f64>() / n);
    let dists: Vec<f32> = points.iter().map(|p| norm(sub(*p, c)) as f32).collect();
    let s = volume.spacing_mm();
    let half_voxel = (s[0] * s[0] + s[1] * s[1] + s[2] * s[2]).sqrt() / 2.0;
    Ball {
        center_mm: c,
        radius_mm: quantile(&dists, 0.995) as f64 + half_voxel,
    }
}

/// Returns the volume with normalised intensities (same grid). Errors when
/// a z-score is asked of a constant channel.
pub fn normalize(volume: &Volume, how: Normalization) -> Result<Volume> {
    let mut out = volume.clone();
    let n = volume.voxels();
    for c in 0..volume.channels() {
        let data = &mut out.data_mut()[c * n..(c + 1) * n];
        let (shift, scale) = match how {
            Normalization::None => continue,
            Normalization::CtWindow { center, width } => {
                if width.is_nan() || width <= 0.0 {
                    return Err(Error::invalid("CT window width", format!("{width}")));
                }
                for v in data.iter_mut() {
                    *v = ((*v - center) / (width / 2.0)).clamp(-1.0, 1.0);
                }
                continue;
            }
            Normalization::Zscore => mean_std(volume.channel(c).iter().copied()),
            Normalization::MedianForeground => {
                let m = masked_median(volume.channel(c), &foreground_mask(volume, c));
                if !(m > 0.0 && m.is_finite()) {
                    return Err(Error::invalid(
                        "normalisation",
                        format!(
                            "channel {c}'s foreground median is {m}; median-foreground needs \
                             positive intensities (MRI magnitudes): use zscore-foreground, or \
                             ct-window for CT"
                        ),
                    ));
                }
                (m, MEDIAN_RATIO_SPREAD * m)
            }
            Normalization::RobustZscoreForeground => {
                let mask = foreground_mask(volume, c);
                let data = volume.channel(c);
                let mut inside: Vec<f32> = masked(data, &mask).collect();
                let m = quantile(&inside, 0.5);
                inside.iter_mut().for_each(|v| *v = (*v - m).abs());
                let mad = MAD_TO_STD * quantile(&inside, 0.5);
                if mad.is_finite() && mad > 0.0 {
                    (m, mad)
                } else {
                    // Over half the foreground at one value (a phantom, a
                    // label-like image): no robust spread to divide by.
                    foreground_mean_std(data, &mask)
                }
            }
            Normalization::ZscoreForeground => {
                foreground_mean_std(volume.channel(c), &foreground_mask(volume, c))
            }
        };
        if scale.is_nan() || scale <= 0.0 {
            return Err(Error::invalid(
                "normalisation",
                format!("channel {c} is constant ({shift}); a z-score needs contrast"),
            ));
        }
        for v in data.iter_mut() {
            *v = (*v - shift) / scale;
        }
    }
    Ok(out)
}

/// Mean and standard deviation over the foreground, or over every voxel
/// when the foreground is constant.
fn foreground_mean_std(data: &[f32], mask: &[bool]) -> (f32, f32) {
    let (m, s) = mean_std(masked(data, mask));
    if s.is_finite() && s > 0.0 {
        (m, s)
    } else {
        mean_std(data.iter().copied())
    }
}

fn mean_std(values: impl Iterator<Item = f32> + Clone) -> (f32, f32) {
    let (mut n, mut s, mut s2) = (0usize, 0.0f64, 0.0f64);
    for v in values {
        n += 1;
        s += v as f64;
        s2 += (v as f64) * (v as f64);
    }
    if n == 0 {
        return (0.0, f32::NAN);
    }
    let m = s / n as f64;
    let var = (s2 / n as f64 - m * m).max(0.0);
    (m as f32, var.sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affine::Affine;

    #[test]
    fn dilation_grows_a_voxel_into_a_box_of_the_margin_in_mm() {
        let shape = [9, 9, 9];
        let mut mask = vec![false; 729];
        mask[4 + 9 * (4 + 9 * 4)] = true;
        // 2 mm voxels along i, 1 mm along j, 4 mm along k; a 4 mm margin is
        // 2, 4 and 1 voxels.
        let grown = dilate_box(&mask, shape, [2.0, 1.0, 4.0], 4.0);
        for (idx, &g) in grown.iter().enumerate() {
            let (i, j, k) = (idx % 9, (idx / 9) % 9, idx / 81);
            let want = i.abs_diff(4) <= 2 && j.abs_diff(4) <= 4 && k.abs_diff(4) <= 1;
            assert_eq!(g, want, "voxel ({i}, {j}, {k})");
        }
        assert_eq!(dilate_box(&mask, shape, [1.0; 3], 0.0), mask);
    }

    fn head() -> Volume {
        // A bright ball of radius 6 voxels in dark noise-free air.
        Volume::from_fn(
            [20, 20, 20],
            Affine::from_diagonal([2.0; 3], [0.0; 3]),
            |i, j, k| {
                let d = ((i as f32 - 9.5).powi(2)
                    + (j as f32 - 9.5).powi(2)
                    + (k as f32 - 9.5).powi(2))
                .sqrt();
                if d < 6.0 {
                    100.0 + (i % 3) as f32 * 10.0
                } else {
                    1.0
                }
            },
        )
        .unwrap()
    }

    #[test]
    fn foreground_is_the_bright_ball_and_its_ball_fits_it() {
        let v = head();
        let mask = foreground(&v);
        let count = mask.iter().filter(|m| **m).count();
        let want = (0..8000).filter(|&idx| {
            let (i, j, k) = (idx % 20, (idx / 20) % 20, idx / 400);
            ((i as f32 - 9.5).powi(2) + (j as f32 - 9.5).powi(2) + (k as f32 - 9.5).powi(2)).sqrt()
                < 6.0
        });
        assert_eq!(count, want.count());
        let b = foreground_ball(&v, &mask);
        assert!(norm(sub(b.center_mm, [19.0, 19.0, 19.0])) < 0.5, "{b:?}");
        // 6 voxels of 2 mm, plus half a voxel diagonal (1.7 mm).
        assert!(b.radius_mm > 10.0 && b.radius_mm < 14.0, "{b:?}");
    }

    #[test]
    fn zscore_over_the_foreground_centres_the_tissue() {
        let v = normalize(&head(), Normalization::ZscoreForeground).unwrap();
        let mask = foreground(&head());
        let fg: Vec<f32> = v
            .data()
            .iter()
            .zip(&mask)
            .filter(|(_, m)| **m)
            .map(|(x, _)| *x)
            .collect();
        let (m, s) = mean_std(fg.iter().copied());
        assert!(m.abs() < 1e-4 && (s - 1.0).abs() < 1e-4, "{m} {s}");
    }

    /// A "brain" ball of radius 7 voxels (100, with a 140 "lesion" at its
    /// centre), optionally inside a bright "scalp" shell, in air.
    fn brain(scalp: bool) -> Volume {
        Volume::from_fn([24; 3], Affine::identity(), |i, j, k| {
            let d = [i, j, k].map(|x| x as f32 - 11.5);
            let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            match r {
                _ if r < 1.5 => 140.0,
                _ if r < 7.0 => 100.0,
                _ if scalp && (7.5..8.5).contains(&r) => 180.0,
                _ => 1.0,
            }
        })
        .unwrap()
    }

    #[test]
    fn the_median_ratio_keeps_a_lesions_step_whether_or_not_a_scalp_is_in_view() {
        // The lesion's step over the tissue, in normalised units.
        let step = |v: &Volume, how| {
            let n = normalize(v, how).unwrap();
            n.get(11, 11, 11, 0) - n.get(11, 11, 15, 0)
        };
        let ratio = |how| step(&brain(true), how) / step(&brain(false), how);
        let median = ratio(Normalization::MedianForeground);
        let zscore = ratio(Normalization::ZscoreForeground);
        assert!((median - 1.0).abs() < 0.05, "median ratio: {median}");
        assert!(zscore < 0.5, "z-score: {zscore}");
        // Its units: the tissue at 0, the lesion 40% brighter at 0.4 / 0.25.
        let n = normalize(&brain(false), Normalization::MedianForeground).unwrap();
        assert!(
            n.get(11, 11, 15, 0).abs() < 1e-5,
            "{}",
            n.get(11, 11, 15, 0)
        );
        assert!((n.get(11, 11, 11, 0) - 1.6).abs() < 1e-5);
        // Scale-free, as MRI intensities are.
        let mut brighter = brain(true);
        brighter.data_mut().iter_mut().for_each(|x| *x *= 7.0);
        let a = normalize(&brighter, Normalization::MedianForeground).unwrap();
        let b = normalize(&brain(true), Normalization::MedianForeground).unwrap();
        assert!(
            a.data()
                .iter()
                .zip(b.data())
                .all(|(x, y)| (x - y).abs() < 1e-4)
        );
    }

    #[test]
    fn the_median_ratio_refuses_intensities_that_are_not_positive() {
        let mut v = brain(false);
        v.data_mut().iter_mut().for_each(|x| *x -= 1000.0);
        let e = normalize(&v, Normalization::MedianForeground)
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive intensities"), "{e}");
    }

    /// A textured "brain" ball of radius 8 voxels (90-110) in air, with a
    /// 150 "lesion" ball of radius `lesion` voxels at its centre.
    fn textured_brain(lesion: f32) -> Volume {
        Volume::from_fn([24; 3], Affine::identity(), |i, j, k| {
            let d = [i, j, k].map(|x| x as f32 - 11.5);
            let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            match r {
                _ if r < lesion => 150.0,
                _ if r < 8.0 => 90.0 + ((i * 7 + j * 13 + k * 29) % 21) as f32,
                _ => 1.0,
            }
        })
        .unwrap()
    }

    #[test]
    fn the_robust_zscore_keeps_the_air_where_it_was_when_a_lesion_is_added() {
        // The lesion is 11% of the foreground.
        let air = |lesion, how| {
            normalize(&textured_brain(lesion), how)
                .unwrap()
                .get(0, 0, 0, 0)
        };
        let moved = |how| air(3.8, how) / air(0.0, how);
        let robust = moved(Normalization::RobustZscoreForeground);
        let zscore = moved(Normalization::ZscoreForeground);
        assert!((robust - 1.0).abs() < 0.2, "robust: {robust}");
        assert!(zscore < 0.5, "z-score: {zscore}");
        // Without a lesion, the texture is uniform on 90..=110 (standard
        // deviation 6.06, median absolute deviation 5): the robust units
        // are a z-score's within the MAD's 1.4826 * 5 = 7.4.
        let tissue =
            normalize(&textured_brain(0.0), Normalization::RobustZscoreForeground).unwrap();
        assert!((tissue.get(0, 0, 0, 0) - (1.0 - 100.0) / 7.413).abs() < 0.2);
    }

    #[test]
    fn the_robust_zscore_of_a_piecewise_constant_scan_falls_back_to_the_zscore() {
        let a = normalize(&brain(false), Normalization::RobustZscoreForeground).unwrap();
        let b = normalize(&brain(false), Normalization::ZscoreForeground).unwrap();
        assert_eq!(a.data(), b.data());
    }

    #[test]
    fn ct_window_clips_to_minus_one_one() {
        let v = Volume::from_fn([4, 1, 1], Affine::identity(), |i, _, _| {
            [-1000.0, 0.0, 40.0, 3000.0][i]
        })
        .unwrap();
        let w = normalize(
            &v,
            Normalization::CtWindow {
                center: 40.0,
                width: 400.0,
            },
        )
        .unwrap();
        assert_eq!(w.data(), &[-1.0, -0.2, 0.0, 1.0]);
    }

    #[test]
    fn constant_volume_cannot_be_z_scored() {
        let v = Volume::filled([4, 4, 4], Affine::identity(), 3.0).unwrap();
        for how in [
            Normalization::Zscore,
            Normalization::ZscoreForeground,
            Normalization::RobustZscoreForeground,
        ] {
            let e = normalize(&v, how).unwrap_err().to_string();
            assert!(e.contains("constant"), "{how:?}: {e}");
        }
        assert!(normalize(&v, Normalization::None).is_ok());
    }
}
