//! ResNet-18 and ResNet-34 in torchvision's layout (`conv1`, `bn1`,
//! `layer1`..`layer4` of basic blocks, `fc`), with any number of input
//! channels and classes, so that torchvision or timm weights load by name.
//! Input `(N, C, P, P)`; stage 0 is the stem output (`P / 4`), stage
//! `s` = 1..=4 the output of `layer{s}` (`P / 4`, `P / 8`, `P / 16`, `P / 32`).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

/// A 1x1 strided projection of the shortcut (torchvision's `downsample`,
/// a `Sequential(conv, bn)` whose keys `downsample.0` / `downsample.1` are
/// remapped to `downsample.conv` / `downsample.bn` on import).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// torchvision's `BasicBlock`.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(c_in, c_out, 1, stride, device),
            bn: BatchNormConfig::new(c_out).init(device),
        });
        Self {
            conv1: conv(c_in, c_out, 3, stride, device),
            bn1: BatchNormConfig::new(c_out).init(device),
            conv2: conv(c_out, c_out, 3, 1, device),
            bn2: BatchNormConfig::new(c_out).init(device),
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = relu(self.bn1.forward(self.conv1.forward(x)));
        let y = self.bn2.forward(self.conv2.forward(y));
        relu(y + identity)
    }
}

/// ResNet with basic blocks.
#[derive(Module, Debug)]
pub struct ResNet {
    pub(crate) conv1: Conv2d,
    bn1: BatchNorm,
    maxpool: MaxPool2d,
    layer1: Vec<BasicBlock>,
    layer2: Vec<BasicBlock>,
    layer3: Vec<BasicBlock>,
    layer4: Vec<BasicBlock>,
    fc: Linear,
    global_max: bool,
}

impl ResNet {
    /// Channels of the slices it takes.
    pub fn in_channels(&self) -> usize {
        self.conv1.weight.val().dims()[1]
    }

    /// ResNet with `blocks[i]` basic blocks in layer `i + 1` (18: `[2, 2, 2, 2]`, 34: `[3, 4, 6, 3]`).
    pub fn new(
        blocks: [usize; 4],
        in_channels: usize,
        classes: usize,
        pooling: super::Pooling,
        device: &Device,
    ) -> Self {
        let widths = [64, 128, 256, 512];
        let mut layers: Vec<Vec<BasicBlock>> = Vec::new();
        let mut c = 64;
        for (i, (&n, &w)) in blocks.iter().zip(&widths).enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            let layer = (0..n)
                .map(|b| {
                    BasicBlock::new(
                        if b == 0 { c } else { w },
                        w,
                        if b == 0 { stride } else { 1 },
                        device,
                    )
                })
                .collect();
            c = w;
            layers.push(layer);
        }
        let mut it = layers.into_iter();
        let mut next = || it.next().expect("four layers");
        Self {
            conv1: Conv2dConfig::new([in_channels, 64], [7, 7])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .with_bias(false)
                .init(device),
            bn1: BatchNormConfig::new(64).init(device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            fc: LinearConfig::new(512, classes).init(device),
            global_max: pooling == super::Pooling::Max,
        }
    }

    /// The linear layer's weight `(d_in, d_out)`.
    pub fn fc_weight(&self) -> Tensor<2> {
        self.fc.weight.val()
    }

    /// The linear layer's bias `(d_out)`, zeros when it has none.
    pub fn fc_bias(&self) -> Tensor<1> {
        super::linear_bias(&self.fc)
    }

    /// Number of feature stages after the stem.
    pub fn stages(&self) -> usize {
        4
    }

    fn layer(&self, s: usize) -> &[BasicBlock] {
        match s {
            1 => &self.layer1,
            2 => &self.layer2,
            3 => &self.layer3,
            _ => &self.layer4,
        }
    }

    /// Feature maps after stage `stage` (0: the stem, 1..=4: `layer{stage}`).
    pub fn features(&self, x: Tensor<4>, stage: usize) -> Tensor<4> {
        let mut x = self
            .maxpool
            .forward(relu(self.bn1.forward(self.conv1.forward(x))));
        for s in 1..=stage.min(4) {
            for b in self.layer(s) {
                x = b.forward(x);
            }
        }
        x
    }

    /// Logits from the feature maps of stage `stage`.
    pub fn head(&self, mut a: Tensor<4>, stage: usize) -> Tensor<2> {
        for s in stage + 1..=4 {
            for b in self.layer(s) {
                a = b.forward(a);
            }
        }
        self.fc.forward(super::global_pool(a, self.global_max))
    }
}
