//! Loading torchvision or timm ResNet weights saved by PyTorch (`.pt`,
//! `.pth`) or as safetensors into tonno's ResNet, through burn-store.
//!
//! torchvision's names match ours except the shortcut's `downsample.0` /
//! `downsample.1` (remapped to `downsample.conv` / `downsample.bn`); batch
//! norm `weight`/`bias` become `gamma`/`beta` and linear weights are
//! transposed by burn-store's PyTorch adapter. The classifier (`fc`) is not
//! loaded: its class count differs. The first convolution's RGB weights are
//! adapted to the volume's channels as timm does: summed for one channel,
//! repeated and scaled by `3 / C` for more.

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};

use super::{Encoder, EncoderConfig, EncoderKind, ResNet};
use crate::error::{Error, Result};

/// Builds the ResNet of `config` with torchvision/timm weights from `path`.
pub fn load_torchvision(config: &EncoderConfig, path: &Path, device: &Device) -> Result<Encoder> {
    let blocks = match config.kind {
        EncoderKind::Resnet18 => [2, 2, 2, 2],
        EncoderKind::Resnet34 => [3, 4, 6, 3],
        EncoderKind::Cnn => {
            return Err(Error::invalid(
                "pretrained weights",
                "only the ResNet encoders take torchvision weights",
            ));
        }
    };
    let bad = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(bad("no such file".into()));
    }
    let mut rgb = ResNet::new(blocks, 3, config.classes, config.pooling, device);
    let skip_fc: fn(&str, &str) -> bool = |p, _| !p.starts_with("fc.");
    let name = path.to_string_lossy().to_ascii_lowercase();
    let result = if name.ends_with(".safetensors") {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping(r"downsample\.0\.(.+)", "downsample.conv.$1")
            .with_key_remapping(r"downsample\.1\.(.+)", "downsample.bn.$1")
            .with_predicate(skip_fc)
            .allow_partial(true);
        rgb.load_from(&mut store)
            .map_err(|e| bad(format!("not a readable safetensors file ({e})")))?
    } else {
        let mut store = PytorchStore::from_file(path)
            .with_key_remapping(r"downsample\.0\.(.+)", "downsample.conv.$1")
            .with_key_remapping(r"downsample\.1\.(.+)", "downsample.bn.$1")
            .with_predicate(skip_fc)
            .allow_partial(true);
        rgb.load_from(&mut store)
            .map_err(|e| bad(format!("not a readable PyTorch checkpoint ({e})")))?
    };
    if !result.errors.is_empty() {
        return Err(bad(format!(
            "weights do not fit a torchvision {}: {:?}",
            config.kind, result.errors
        )));
    }
    let missing: Vec<&str> = result
        .missing
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| !p.starts_with("fc."))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "not a torchvision {} state dict: {} tensor(s) missing, e.g. {:?}",
            config.kind,
            missing.len(),
            &missing[..missing.len().min(5)]
        )));
    }
    Ok(Encoder::ResNet(rgb.with_input_channels(config.in_channels)))
}

impl ResNet {
    /// Adapts the first convolution from its input channels to `channels`
    /// (timm's `adapt_input_conv`): summed to one channel, or repeated and
    /// scaled by `in / channels` to more.
    pub fn with_input_channels(mut self, channels: usize) -> Self {
        let w = self.conv1.weight.val();
        let [out, cin, kh, kw] = w.dims();
        if channels == cin {
            return self;
        }
        let adapted = if channels == 1 {
            w.sum_dim(1)
        } else {
            let reps = channels.div_ceil(cin);
            let tiled = Tensor::cat(vec![w; reps], 1).slice([0..out, 0..channels, 0..kh, 0..kw]);
            tiled * (cin as f32 / channels as f32)
        };
        self.conv1.weight = Param::from_tensor(adapted);
        self
    }
}
