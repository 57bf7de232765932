//! Metrics: ranking (AUROC, average precision) and, for segmentation,
//! overlap and surface distances (see the evaluation commands).

/// Area under the ROC curve of `scores` for binary `labels` (Mann-Whitney U
/// with ties counted half). `None` when a class is missing.
pub fn auroc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "auroc: one label per score");
    let n_pos = labels.iter().filter(|l| **l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos * n_neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_perfect_reversed_random_and_tied_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(auroc(&[0.1, 0.2, 0.3, 0.4], &labels), Some(1.0));
        assert_eq!(auroc(&[0.4, 0.3, 0.2, 0.1], &labels), Some(0.0));
        assert_eq!(auroc(&[0.5; 4], &labels), Some(0.5));
        // One swapped pair out of four: 3/4 (sklearn.metrics.roc_auc_score gives 0.75).
        assert_eq!(auroc(&[0.1, 0.35, 0.3, 0.4], &labels), Some(0.75));
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), None);
    }
}

/// Average precision (area under the precision-recall curve, as
/// scikit-learn's `average_precision_score`: `sum_n (R_n - R_{n-1}) P_n`
/// over decreasing thresholds, ties grouped). `None` without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "average_precision: one label per score"
    );
    let n_pos = labels.iter().filter(|l| **l).count();
    if n_pos == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut prev_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / n_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
        i = j;
    }
    Some(ap)
}

/// Dice coefficient `2 |A n B| / (|A| + |B|)`; 1 when both are empty.
pub fn dice(pred: &[bool], truth: &[bool]) -> f64 {
    assert_eq!(pred.len(), truth.len(), "dice: same number of voxels");
    let (mut inter, mut a, mut b) = (0usize, 0usize, 0usize);
    for (&p, &t) in pred.iter().zip(truth) {
        inter += (p && t) as usize;
        a += p as usize;
        b += t as usize;
    }
    if a + b == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (a + b) as f64
    }
}

/// Surface voxels of a mask: mask voxels with a 6-neighbour outside the mask
/// or outside the grid (MONAI's `get_mask_edges`: the mask XOR its binary
/// erosion with a cross structuring element).
pub fn surface(mask: &[bool], shape: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = shape;
    let at = |i: isize, j: isize, k: isize| -> bool {
        i >= 0
            && j >= 0
            && k >= 0
            && (i as usize) < nx
            && (j as usize) < ny
            && (k as usize) < nz
            && mask[i as usize + nx * (j as usize + ny * k as usize)]
    };
    let mut out = vec![false; mask.len()];
    for k in 0..nz as isize {
        for j in 0..ny as isize {
            for i in 0..nx as isize {
                let idx = i as usize + nx * (j as usize + ny * k as usize);
                if mask[idx] {
                    let interior = at(i - 1, j, k)
                        && at(i + 1, j, k)
                        && at(i, j - 1, k)
                        && at(i, j + 1, k)
                        && at(i, j, k - 1)
                        && at(i, j, k + 1);
                    out[idx] = !interior;
                }
            }
        }
    }
    out
}

/// Exact Euclidean distance (mm) from every voxel to the nearest `true`
/// voxel of `mask`, with per-axis `spacing_mm` (Felzenszwalb-Huttenlocher
/// separable squared distance transform). Infinite when `mask` is empty.
pub fn distance_transform(mask: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> Vec<f64> {
    let [nx, ny, nz] = shape;
    let mut d: Vec<f64> = mask
        .iter()
        .map(|&m| if m { 0.0 } else { f64::INFINITY })
        .collect();
    let strides = [1, nx, nx * ny];
    let dims = [nx, ny, nz];
    for axis in 0..3 {
        let n = dims[axis];
        let s2 = spacing_mm[axis] * spacing_mm[axis];
        let (o1, o2) = match axis {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        let mut f = vec![0.0f64; n];
        let mut out = vec![0.0f64; n];
        for a in 0..dims[o1] {
            for b in 0..dims[o2] {
                let base = a * strides[o1] + b * strides[o2];
                for (q, fq) in f.iter_mut().enumerate() {
                    *fq = d[base + q * strides[axis]];
                }
                edt_1d(&f, s2, &mut out);
                for (q, oq) in out.iter().enumerate() {
                    d[base + q * strides[axis]] = *oq;
                }
            }
        }
    }
    d.iter().map(|v| v.sqrt()).collect()
}

/// 1D squared distance transform of sampled function `f` with squared
/// spacing `s2` (lower envelope of parabolas).
fn edt_1d(f: &[f64], s2: f64, out: &mut [f64]) {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&q| f[q].is_finite()).collect();
    if finite.is_empty() {
        out.fill(f64::INFINITY);
        return;
    }
    // v: parabola positions, z: boundaries between them.
    let mut v: Vec<usize> = Vec::with_capacity(finite.len());
    let mut z: Vec<f64> = Vec::with_capacity(finite.len() + 1);
    let inter = |p: usize, q: usize| -> f64 {
        ((f[q] + s2 * (q * q) as f64) - (f[p] + s2 * (p * p) as f64))
            / (2.0 * s2 * (q as f64 - p as f64))
    };
    for &q in &finite {
        while let Some(&p) = v.last() {
            let s = inter(p, q);
            if s <= *z.last().expect("z has one more entry than v") {
                v.pop();
                z.pop();
            } else {
                v.push(q);
                z.push(s);
                break;
            }
        }
        if v.is_empty() {
            v.push(q);
            z.clear();
            z.push(f64::NEG_INFINITY);
        }
    }
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while k + 1 < v.len() && z[k + 1] < q as f64 {
            k += 1;
        }
        let dq = q as f64 - v[k] as f64;
        *o = s2 * dq * dq + f[v[k]];
    }
}

/// The `p`-th percentile (0..=100) with linear interpolation between order
/// statistics (numpy's default).
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = (n - 1) as f64 * p / 100.0;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// 95th-percentile Hausdorff distance in mm, MONAI's convention
/// (`compute_hausdorff_distance(percentile=95)`): surface voxels of each
/// mask, distances from each surface to the other's, the larger of the two
/// directed 95th percentiles. `None` when either mask is empty.
pub fn hd95(pred: &[bool], truth: &[bool], shape: [usize; 3], spacing_mm: [f64; 3]) -> Option<f64> {
    if !pred.iter().any(|&p| p) || !truth.iter().any(|&t| t) {
        return None;
    }
    let (sp, st) = (surface(pred, shape), surface(truth, shape));
    let (dp, dt) = (
        distance_transform(&sp, shape, spacing_mm),
        distance_transform(&st, shape, spacing_mm),
    );
    let mut a: Vec<f64> = sp
        .iter()
        .zip(&dt)
        .filter(|(s, _)| **s)
        .map(|(_, d)| *d)
        .collect();
    let mut b: Vec<f64> = st
        .iter()
        .zip(&dp)
        .filter(|(s, _)| **s)
        .map(|(_, d)| *d)
        .collect();
    Some(percentile(&mut a, 95.0).max(percentile(&mut b, 95.0)))
}

/// Connected components (26-connectivity) of a mask: a label per voxel
/// (0 = background) and the number of components.
pub fn components(mask: &[bool], shape: [usize; 3]) -> (Vec<u32>, u32) {
    let [nx, ny, nz] = shape;
    let mut labels = vec![0u32; mask.len()];
    let mut next = 0u32;
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        next += 1;
        labels[start] = next;
        stack.push(start);
        while let Some(idx) = stack.pop() {
            let (i, j, k) = (
                (idx % nx) as isize,
                ((idx / nx) % ny) as isize,
                (idx / (nx * ny)) as isize,
            );
            for dk in -1..=1isize {
                for dj in -1..=1isize {
                    for di in -1..=1isize {
                        let (a, b, c) = (i + di, j + dj, k + dk);
                        if a < 0
                            || b < 0
                            || c < 0
                            || a >= nx as isize
                            || b >= ny as isize
                            || c >= nz as isize
                        {
                            continue;
                        }
                        let n = a as usize + nx * (b as usize + ny * c as usize);
                        if mask[n] && labels[n] == 0 {
                            labels[n] = next;
                            stack.push(n);
                        }
                    }
                }
            }
        }
    }
    (labels, next)
}

/// Lesion-level detection counts: a true lesion (a truth component) is
/// detected when a predicted component overlaps it; a predicted component
/// overlapping no lesion is a false positive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Detection {
    pub true_positives: usize,
    pub false_negatives: usize,
    pub false_positives: usize,
}

impl Detection {
    /// `2 TP / (2 TP + FP + FN)`; 1 when there is nothing to find and nothing found.
    pub fn f1(&self) -> f64 {
        let d = 2 * self.true_positives + self.false_positives + self.false_negatives;
        if d == 0 {
            1.0
        } else {
            2.0 * self.true_positives as f64 / d as f64
        }
    }

    /// Adds another case's counts.
    pub fn add(&mut self, other: Detection) {
        self.true_positives += other.true_positives;
        self.false_negatives += other.false_negatives;
        self.false_positives += other.false_positives;
    }
}

/// Detection counts of one case.
pub fn detection(pred: &[bool], truth: &[bool], shape: [usize; 3]) -> Detection {
    let (tl, nt) = components(truth, shape);
    let (pl, np) = components(pred, shape);
    let mut truth_hit = vec![false; nt as usize + 1];
    let mut pred_hit = vec![false; np as usize + 1];
    for (&t, &p) in tl.iter().zip(&pl) {
        if t > 0 && p > 0 {
            truth_hit[t as usize] = true;
            pred_hit[p as usize] = true;
        }
    }
    let tp = truth_hit.iter().skip(1).filter(|h| **h).count();
    Detection {
        true_positives: tp,
        false_negatives: nt as usize - tp,
        false_positives: pred_hit.iter().skip(1).filter(|h| !**h).count(),
    }
}
