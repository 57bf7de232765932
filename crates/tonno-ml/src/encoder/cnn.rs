//! The default encoder: a small CNN sized for CPU training. Four blocks of
//! `conv 3x3 -> batch norm -> ReLU -> max pool 2x2` with widths
//! `w, 2w, 4w, 8w`, then global pooling (max by default) and a linear layer.
//! Input `(N, C, P, P)`; stage `s` (1..=4) outputs `(N, 2^(s-1) w, P / 2^s, P / 2^s)`.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// One `conv -> BN -> ReLU -> pool` block.
#[derive(Module, Debug)]
pub struct Block {
    conv: Conv2d,
    bn: BatchNorm,
    pool: MaxPool2d,
}

impl Block {
    fn new(c_in: usize, c_out: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(c_out).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.pool
            .forward(relu(self.bn.forward(self.conv.forward(x))))
    }
}

/// The small CNN.
#[derive(Module, Debug)]
pub struct SmallCnn {
    blocks: Vec<Block>,
    fc: Linear,
    global_max: bool,
}

impl SmallCnn {
    /// `in_channels` input channels, first width `width`, `classes` logits.
    pub fn new(
        in_channels: usize,
        width: usize,
        classes: usize,
        pooling: super::Pooling,
        device: &Device,
    ) -> Self {
        let widths = [width, 2 * width, 4 * width, 8 * width];
        let mut blocks = Vec::new();
        let mut c = in_channels;
        for &w in &widths {
            blocks.push(Block::new(c, w, device));
            c = w;
        }
        Self {
            blocks,
            fc: LinearConfig::new(c, classes).init(device),
            global_max: pooling == super::Pooling::Max,
        }
    }

    /// Channels of the slices it takes.
    pub fn in_channels(&self) -> usize {
        self.blocks[0].conv.weight.val().dims()[1]
    }

    /// The linear layer's weight `(d_in, d_out)`.
    pub fn fc_weight(&self) -> Tensor<2> {
        self.fc.weight.val()
    }

    /// The linear layer's bias `(d_out)`, zeros when it has none.
    pub fn fc_bias(&self) -> Tensor<1> {
        super::linear_bias(&self.fc)
    }

    /// Number of feature stages.
    pub fn stages(&self) -> usize {
        self.blocks.len()
    }

    /// Feature maps after stage `stage` (1-based; 0 is the input).
    pub fn features(&self, mut x: Tensor<4>, stage: usize) -> Tensor<4> {
        for b in self.blocks.iter().take(stage) {
            x = b.forward(x);
        }
        x
    }

    /// Logits from the feature maps of stage `stage`.
    pub fn head(&self, mut a: Tensor<4>, stage: usize) -> Tensor<2> {
        for b in self.blocks.iter().skip(stage) {
            a = b.forward(a);
        }
        self.fc.forward(super::global_pool(a, self.global_max))
    }
}
