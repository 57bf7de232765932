//! GradCAM and LayerCAM (docs/METHOD.md section 5) through burn's autodiff: the
//! gradient of a slice's logit with respect to the feature maps of one stage.
//!
//! - GradCAM: `w_c = mean_ij dy/dA^c_ij`, map `ReLU(sum_c w_c A^c)`.
//! - LayerCAM: map `ReLU(sum_c ReLU(dy/dA^c_ij) A^c_ij)`.
//!
//! Maps are computed at the stage's resolution and bilinearly upsampled to
//! the slice (`P x P`, half-pixel centres as OpenCV's resize, which
//! pytorch-grad-cam uses). Inputs `(N, C, P, P)`; outputs `(N, P, P)` maps
//! and `N` logits (class 0).

use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

use crate::encoder::Encoder;
use crate::error::{Error, Result};

/// Which class activation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CamKind {
    GradCam,
    LayerCam,
}

/// Logits and upsampled CAMs of a batch.
#[derive(Debug, Clone)]
pub struct CamBatch {
    pub logits: Vec<f32>,
    /// `(N, P, P)` maps per requested kind, in the order asked.
    pub maps: Vec<Vec<f32>>,
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::invalid("tensor", format!("{e:?}")))
}

/// The gradient of the class-0 logit with respect to the feature maps of
/// `stage`: returns `(logits, A, dy/dA)` with `A` shaped `(N, Ch, h, w)`.
/// `encoder` must be in validation mode (no autodiff); the features are
/// made an autodiff leaf so that only the head is differentiated.
pub fn feature_gradients(
    encoder: &Encoder,
    x: Tensor<4>,
    stage: usize,
) -> Result<(Vec<f32>, Tensor<4>, Tensor<4>)> {
    if stage > encoder.stages() {
        return Err(Error::invalid(
            "CAM layer",
            format!("stage {stage}, but the encoder has {}", encoder.stages()),
        ));
    }
    let a = encoder.features(x, stage);
    let leaf = a.clone().autodiff().require_grad();
    let y = encoder.head(leaf.clone(), stage);
    let n = y.dims()[0];
    let y0 = y.slice([0..n, 0..1]);
    let logits = to_vec(y0.clone().without_autodiff())?;
    let grads = y0.sum().backward();
    let g = leaf
        .grad(&grads)
        .ok_or_else(|| Error::invalid("CAM", "no gradient reached the feature maps"))?;
    Ok((logits, a, g))
}

/// CAMs of `kinds` for slices `(n, channels, p, p)` held on the CPU.
pub fn cams(
    encoder: &Encoder,
    device: &Device,
    slices: &[f32],
    channels: usize,
    p: usize,
    kinds: &[(CamKind, usize)],
) -> Result<CamBatch> {
    let per = channels * p * p;
    let n = slices.len() / per;
    let x = Tensor::<4>::from_data(
        TensorData::new(slices.to_vec(), [n, channels, p, p]),
        device,
    );
    let mut logits = Vec::new();
    let mut maps = Vec::new();
    for &(kind, stage) in kinds {
        let (l, a, g) = feature_gradients(encoder, x.clone(), stage)?;
        logits = l;
        let [_, _, h, w] = a.dims();
        let map = match kind {
            CamKind::GradCam => {
                let weights = g.mean_dim(3).mean_dim(2);
                relu((a * weights).sum_dim(1))
            }
            CamKind::LayerCam => relu((relu(g) * a).sum_dim(1)),
        };
        let small = to_vec(map)?;
        let mut up = vec![0.0f32; n * p * p];
        for (src, dst) in small.chunks_exact(h * w).zip(up.chunks_exact_mut(p * p)) {
            upsample_bilinear(src, h, w, dst, p, p);
        }
        maps.push(up);
    }
    Ok(CamBatch { logits, maps })
}

/// Bilinear resize with half-pixel centres (OpenCV `INTER_LINEAR`,
/// PyTorch `align_corners=False`), edges clamped.
pub fn upsample_bilinear(src: &[f32], h: usize, w: usize, dst: &mut [f32], oh: usize, ow: usize) {
    let coord = |o: usize, n_out: usize, n_in: usize| -> (usize, usize, f32) {
        let x = ((o as f32 + 0.5) * n_in as f32 / n_out as f32 - 0.5).max(0.0);
        let i0 = (x.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, x - i0 as f32)
    };
    for r in 0..oh {
        let (r0, r1, fr) = coord(r, oh, h);
        for c in 0..ow {
            let (c0, c1, fc) = coord(c, ow, w);
            let top = src[r0 * w + c0] * (1.0 - fc) + src[r0 * w + c1] * fc;
            let bot = src[r1 * w + c0] * (1.0 - fc) + src[r1 * w + c1] * fc;
            dst[r * ow + c] = top * (1.0 - fr) + bot * fr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{EncoderConfig, EncoderKind, Pooling};

    #[test]
    fn upsampling_matches_opencv_half_pixel_convention() {
        // cv2.resize(np.array([[0, 1], [2, 3]], np.float32), (4, 4)) gives these rows.
        let src = [0.0, 1.0, 2.0, 3.0];
        let mut dst = [0.0; 16];
        upsample_bilinear(&src, 2, 2, &mut dst, 4, 4);
        let want = [
            0.0, 0.25, 0.75, 1.0, //
            0.5, 0.75, 1.25, 1.5, //
            1.5, 1.75, 2.25, 2.5, //
            2.0, 2.25, 2.75, 3.0,
        ];
        for (a, b) in dst.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{dst:?}");
        }
    }

    fn encoder(pooling: Pooling) -> (Encoder, Device) {
        let device = Device::flex();
        let cfg = EncoderConfig {
            kind: EncoderKind::Cnn,
            in_channels: 1,
            classes: 1,
            cnn_width: 4,
            pooling,
        };
        let encoder = crate::encoder::init_seeded(&device, 7, || cfg.init(&device)).unwrap();
        (encoder.valid(), device)
    }

    fn input(device: &Device) -> Tensor<4> {
        Tensor::<4>::random(
            [2, 1, 32, 32],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            device,
        )
    }

    #[test]
    fn feature_gradients_match_finite_differences() {
        for pooling in [Pooling::Avg, Pooling::Max] {
            let (enc, device) = encoder(pooling);
            let x = input(&device);
            for stage in [2, 4] {
                let (_, a, g) = feature_gradients(&enc, x.clone(), stage).unwrap();
                let a_v = to_vec(a.clone()).unwrap();
                let g_v = to_vec(g).unwrap();
                let dims = a.dims();
                let y = |vals: &[f32]| -> f32 {
                    let t = Tensor::<4>::from_data(TensorData::new(vals.to_vec(), dims), &device);
                    to_vec(enc.head(t, stage)).unwrap()[0]
                };
                let base = y(&a_v);
                // Largest-gradient entries of the first slice, and a few others.
                let mut idx: Vec<usize> = (0..a_v.len() / 2).collect();
                idx.sort_by(|&i, &j| g_v[j].abs().total_cmp(&g_v[i].abs()));
                for &i in idx.iter().take(4).chain(idx.iter().rev().take(2)) {
                    let eps = 1e-2;
                    let mut bumped = a_v.clone();
                    bumped[i] += eps;
                    let fd = (y(&bumped) - base) / eps;
                    assert!(
                        (fd - g_v[i]).abs() < 2e-2 * (1.0 + g_v[i].abs()),
                        "{pooling:?} stage {stage} idx {i}: fd {fd} vs autodiff {}",
                        g_v[i]
                    );
                }
            }
        }
    }

    #[test]
    fn gradcam_of_an_average_pooled_linear_head_is_weights_times_activations() {
        // y = b + sum_c w_c mean_ij A_cij, so dy/dA_cij = w_c / (h w) and
        // GradCAM = ReLU(sum_c (w_c / hw) A_c): the original CAM up to 1/hw.
        let (enc, device) = encoder(Pooling::Avg);
        let x = input(&device);
        let stage = enc.stages();
        let (_, a, g) = feature_gradients(&enc, x.clone(), stage).unwrap();
        let [n, ch, h, w] = a.dims();
        let w_c = enc.class_weights(0);
        assert_eq!(w_c.len(), ch);
        let g_v = to_vec(g).unwrap();
        for (i, gv) in g_v.iter().enumerate() {
            let c = (i / (h * w)) % ch;
            assert!((gv - w_c[c] / (h * w) as f32).abs() < 1e-5, "entry {i}");
        }
        let a_v = to_vec(a).unwrap();
        let batch = cams(
            &enc,
            &device,
            &to_vec(x).unwrap(),
            1,
            32,
            &[(CamKind::GradCam, stage)],
        )
        .unwrap();
        // Compare at the stage resolution: downsampling is not needed when the
        // map is constant... so check the formula on the small map directly.
        let mut expected_small = vec![0.0f32; n * h * w];
        for s in 0..n {
            for c in 0..ch {
                for q in 0..h * w {
                    expected_small[s * h * w + q] +=
                        w_c[c] / (h * w) as f32 * a_v[(s * ch + c) * h * w + q];
                }
            }
        }
        let mut expected = vec![0.0f32; n * 32 * 32];
        for (src, dst) in expected_small
            .chunks(h * w)
            .zip(expected.chunks_mut(32 * 32))
        {
            let relu: Vec<f32> = src.iter().map(|v| v.max(0.0)).collect();
            upsample_bilinear(&relu, h, w, dst, 32, 32);
        }
        for (got, want) in batch.maps[0].iter().zip(&expected) {
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn layercam_is_non_negative_and_differs_from_gradcam() {
        let (enc, device) = encoder(Pooling::Max);
        let x = to_vec(input(&device)).unwrap();
        let b = cams(
            &enc,
            &device,
            &x,
            1,
            32,
            &[(CamKind::GradCam, 4), (CamKind::LayerCam, 3)],
        )
        .unwrap();
        assert_eq!(b.logits.len(), 2);
        assert!(
            b.maps
                .iter()
                .all(|m| m.len() == 2 * 32 * 32 && m.iter().all(|v| *v >= 0.0))
        );
        assert_ne!(b.maps[0], b.maps[1]);
    }
}
