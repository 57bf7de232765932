//! 2D slice encoders: a small CPU-sized CNN (the default), ResNet-18 and
//! ResNet-34 in torchvision's layout. Each maps `(N, C, P, P)` slices to
//! `(N, classes)` logits, and exposes its intermediate feature maps by stage
//! so that GradCAM and LayerCAM can differentiate the logit with respect to them.

pub mod cnn;
pub mod pretrained;
pub mod resnet;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use cnn::SmallCnn;
pub use resnet::ResNet;

use crate::error::{Error, Result};

/// Which encoder architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncoderKind {
    /// Four conv blocks; fast on CPU.
    #[default]
    Cnn,
    /// torchvision ResNet-18.
    Resnet18,
    /// torchvision ResNet-34.
    Resnet34,
}

impl std::str::FromStr for EncoderKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "cnn" => Ok(Self::Cnn),
            "resnet18" => Ok(Self::Resnet18),
            "resnet34" => Ok(Self::Resnet34),
            other => Err(Error::invalid(
                "encoder",
                format!("{other:?}; use cnn, resnet18 or resnet34"),
            )),
        }
    }
}

impl std::fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cnn => "cnn",
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
        })
    }
}

impl EncoderKind {
    /// The slice size each encoder is sized for (pixels per side).
    pub fn default_slice_size(self) -> usize {
        match self {
            Self::Cnn => 64,
            Self::Resnet18 | Self::Resnet34 => 128,
        }
    }
}

/// Global pooling of the last feature maps before the linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Spatial maximum: a small lesion anywhere in the slice drives the logit
    /// (measured on `tonno synth` data: the average lets it drown in tissue).
    #[default]
    Max,
    /// Spatial mean (torchvision's ResNet head).
    Avg,
}

/// `(N, C, H, W)` to `(N, C)` by spatial max or mean.
pub(crate) fn global_pool(a: Tensor<4>, max: bool) -> Tensor<2> {
    if max {
        a.max_dim(3).max_dim(2).flatten::<2>(1, 3)
    } else {
        a.mean_dim(3).mean_dim(2).flatten::<2>(1, 3)
    }
}

/// Everything needed to rebuild an encoder (saved in a run's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    /// Input channels (MRI sequences).
    pub in_channels: usize,
    /// Output logits.
    pub classes: usize,
    /// First width of the small CNN (ignored by ResNets).
    pub cnn_width: usize,
    /// Global pooling before the linear layer.
    #[serde(default)]
    pub pooling: Pooling,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            kind: EncoderKind::Cnn,
            in_channels: 1,
            classes: 1,
            cnn_width: 8,
            pooling: Pooling::Max,
        }
    }
}

impl EncoderConfig {
    /// Checks the sizes a config file gives (generous bounds: a CT or MRI
    /// study has a handful of channels, and a mistyped width must not
    /// allocate gigabytes).
    pub fn validate(&self) -> Result<()> {
        let bounded = [
            ("in_channels", self.in_channels, 256),
            ("classes", self.classes, 4096),
            ("cnn_width", self.cnn_width, 1024),
        ];
        for (name, v, max) in bounded {
            if v == 0 || v > max {
                return Err(Error::invalid(
                    format!("encoder {name}"),
                    format!("{v} (must be 1 to {max})"),
                ));
            }
        }
        Ok(())
    }

    /// Builds a freshly initialised encoder on `device` (weights drawn from
    /// the device's seed).
    pub fn init(&self, device: &Device) -> Result<Encoder> {
        self.validate()?;
        Ok(match self.kind {
            EncoderKind::Cnn => Encoder::Cnn(SmallCnn::new(
                self.in_channels,
                self.cnn_width,
                self.classes,
                self.pooling,
                device,
            )),
            EncoderKind::Resnet18 => Encoder::ResNet(ResNet::new(
                [2, 2, 2, 2],
                self.in_channels,
                self.classes,
                self.pooling,
                device,
            )),
            EncoderKind::Resnet34 => Encoder::ResNet(ResNet::new(
                [3, 4, 6, 3],
                self.in_channels,
                self.classes,
                self.pooling,
                device,
            )),
        })
    }
}

/// An encoder of any kind.
// One encoder lives per run; its inline size does not matter, and boxing
// would add a path segment to the stored weights.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Encoder {
    Cnn(SmallCnn),
    ResNet(ResNet),
}

impl Encoder {
    /// Logits `(N, classes)` of slices `(N, C, P, P)`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let s = self.stages();
        self.head(self.features(x, s), s)
    }

    /// Channels of the slices it takes.
    pub fn in_channels(&self) -> usize {
        match self {
            Self::Cnn(m) => m.in_channels(),
            Self::ResNet(m) => m.in_channels(),
        }
    }

    /// Number of feature stages (the last is the GradCAM default).
    pub fn stages(&self) -> usize {
        match self {
            Self::Cnn(m) => m.stages(),
            Self::ResNet(m) => m.stages(),
        }
    }

    /// Feature maps after stage `stage`.
    pub fn features(&self, x: Tensor<4>, stage: usize) -> Tensor<4> {
        match self {
            Self::Cnn(m) => m.features(x, stage),
            Self::ResNet(m) => m.features(x, stage),
        }
    }

    /// Logits from the feature maps of stage `stage`.
    pub fn head(&self, a: Tensor<4>, stage: usize) -> Tensor<2> {
        match self {
            Self::Cnn(m) => m.head(a, stage),
            Self::ResNet(m) => m.head(a, stage),
        }
    }

    /// The linear head's bias, one per class: the part of every slice's
    /// logit that no slice's content moves.
    pub fn output_bias(&self) -> Tensor<1> {
        match self {
            Self::Cnn(m) => m.fc_bias(),
            Self::ResNet(m) => m.fc_bias(),
        }
    }

    /// The linear head's weights for `class` (one per channel of the last stage).
    pub fn class_weights(&self, class: usize) -> Vec<f32> {
        let w = match self {
            Self::Cnn(m) => m.fc_weight(),
            Self::ResNet(m) => m.fc_weight(),
        };
        // burn's Linear stores (d_in, d_out).
        let [d_in, _] = w.dims();
        let v: Vec<f32> = w.into_data().try_to_vec::<f32>().unwrap_or_default();
        let d_out = v.len() / d_in.max(1);
        (0..d_in).map(|i| v[i * d_out + class]).collect()
    }

    /// The default layer for LayerCAM: one stage before the last, at twice
    /// the resolution (docs/METHOD.md section 5: LayerCAM stays usable at an
    /// earlier, finer layer).
    pub fn default_layercam_stage(&self) -> usize {
        self.stages().saturating_sub(1).max(1)
    }
}

/// The encoder `init` makes, with `device`'s random generator seeded by
/// `seed` and every weight drawn before this returns, with no other seeded
/// initialisation of this process in between. burn keeps one generator per
/// backend and draws a weight lazily, when it is first used, so two trainings
/// started together (as tests run) would otherwise draw each other's numbers
/// and neither would be reproducible.
pub fn init_seeded(
    device: &Device,
    seed: u64,
    init: impl FnOnce() -> Result<Encoder>,
) -> Result<Encoder> {
    struct Materialise;
    impl burn::module::ModuleVisitor for Materialise {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            param.val();
        }
    }
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    let encoder = init()?;
    encoder.visit(&mut Materialise);
    Ok(encoder)
}

/// A linear layer's bias `(d_out)`, zeros when it has none.
fn linear_bias(fc: &burn::nn::Linear) -> Tensor<1> {
    let w = fc.weight.val();
    let [_, d_out] = w.dims();
    fc.bias
        .as_ref()
        .map_or_else(|| Tensor::zeros([d_out], &w.device()), |b| b.val())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_of_every_encoder_and_stage() {
        let device = Device::flex();
        for (kind, p, last) in [
            (EncoderKind::Cnn, 32, 2),
            (EncoderKind::Resnet18, 64, 2),
            (EncoderKind::Resnet34, 64, 2),
        ] {
            let cfg = EncoderConfig {
                kind,
                in_channels: 3,
                classes: 2,
                cnn_width: 4,
                pooling: Pooling::Max,
            };
            let enc = cfg.init(&device).unwrap();
            let x = Tensor::<4>::zeros([2, 3, p, p], &device);
            assert_eq!(enc.forward(x.clone()).dims(), [2, 2], "{kind}");
            let a = enc.features(x, enc.stages());
            assert_eq!(a.dims()[2], last, "{kind}: last stage is P/16 or P/32");
            assert_eq!(enc.head(a, enc.stages()).dims(), [2, 2]);
        }
    }
}
