//! An exponential moving average of a model's weights over optimiser steps
//! (Polyak averaging), which validation, model selection and the saved model
//! use instead of the last step's weights.
//!
//! Why: with a few hundred scans, the validation AUROC of the raw weights
//! jumps by several points from one epoch to the next while the loss falls
//! smoothly; each step moves the weights along the noise of its batch. The
//! average keeps the direction the steps share and cancels the rest.
//!
//! Every float tensor of the module is averaged, the batch-norm running
//! statistics included (they are buffers of the weights they go with). The
//! tensors are kept flattened, in the order burn visits them, which is the
//! module's structure: a model rebuilt from a file has new parameter ids but
//! the same order.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::encoder::Encoder;

/// The running average. `decay` is per optimiser step: each step's weights
/// count `1 - decay`, so the average spans about `1 / (1 - decay)` steps.
#[derive(Debug, Clone)]
pub struct WeightAverage {
    decay: f64,
    updates: u64,
    values: Vec<Tensor<1>>,
}

impl WeightAverage {
    /// An empty average; the first update copies the weights.
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            updates: 0,
            values: Vec::new(),
        }
    }

    /// An average resumed from `model` (an averaged model saved by
    /// [`WeightAverage::apply`]) after `updates` updates.
    pub fn resume(decay: f64, updates: u64, model: &Encoder) -> Self {
        Self {
            decay,
            updates,
            values: flattened(model),
        }
    }

    /// Updates folded in so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The weight of the average so far in the next update. Early on the
    /// average spans only the steps there have been, `(1 + t) / (10 + t)`
    /// after `t` updates, so that it does not drag the random
    /// initialisation along for hundreds of steps.
    fn current_decay(&self) -> f64 {
        let t = self.updates as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Folds `model`'s current weights (an inference copy: `valid()`) into
    /// the average.
    pub fn update(&mut self, model: &Encoder) {
        let weights = flattened(model);
        if self.values.is_empty() {
            self.values = weights;
        } else {
            assert_eq!(
                self.values.len(),
                weights.len(),
                "the averaged model changed shape"
            );
            let d = self.current_decay();
            for (avg, w) in self.values.iter_mut().zip(weights) {
                *avg = avg.clone().mul_scalar(d) + w.mul_scalar(1.0 - d);
            }
        }
        self.updates += 1;
    }

    /// `model` (an inference copy) with the averaged weights; `model`
    /// itself when nothing has been averaged yet.
    pub fn apply(&self, model: Encoder) -> Encoder {
        if self.values.is_empty() {
            return model;
        }
        let mut put = Put {
            values: &self.values,
            next: 0,
        };
        let averaged = model.map(&mut put);
        assert_eq!(
            put.next,
            self.values.len(),
            "the averaged model changed shape"
        );
        averaged
    }
}

/// Every float tensor of `model`, flattened, in visiting order.
fn flattened(model: &Encoder) -> Vec<Tensor<1>> {
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

/// Replaces each float tensor by the next averaged one, in visiting order.
struct Put<'a> {
    values: &'a [Tensor<1>],
    next: usize,
}

impl ModuleMapper for Put<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let avg = self.values[self.next].clone();
        self.next += 1;
        param.map(|t| {
            assert_eq!(
                t.shape().num_elements(),
                avg.shape().num_elements(),
                "the averaged model changed shape"
            );
            avg.reshape(t.shape())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{EncoderConfig, EncoderKind, Pooling};

    fn cnn(device: &Device, seed: u64) -> Encoder {
        let cfg = EncoderConfig {
            kind: EncoderKind::Cnn,
            in_channels: 1,
            classes: 1,
            cnn_width: 4,
            pooling: Pooling::Max,
        };
        crate::encoder::init_seeded(device, seed, || cfg.init(device)).unwrap()
    }

    fn flat(model: &Encoder) -> Vec<f32> {
        flattened(model)
            .into_iter()
            .flat_map(|t| t.into_data().try_to_vec::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn the_average_weighs_each_update_as_its_decay_says() {
        let device = Device::flex();
        let (a, b) = (cnn(&device, 1), cnn(&device, 2));
        let (wa, wb) = (flat(&a), flat(&b));
        assert_ne!(wa, wb);
        let mut avg = WeightAverage::new(0.5);
        avg.update(&a);
        // The first update copies; the second, after one update, weighs the
        // average by min(0.5, 2 / 11).
        assert_eq!(flat(&avg.apply(b.clone())), wa);
        avg.update(&b);
        let d = 2.0 / 11.0;
        let got = flat(&avg.apply(b.clone()));
        for ((g, x), y) in got.iter().zip(&wa).zip(&wb) {
            let want = d * *x as f64 + (1.0 - d) * *y as f64;
            assert!((*g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
        // Once t is large the decay is the configured one.
        let mut late = WeightAverage::resume(0.5, 1000, &a);
        late.update(&b);
        let got = flat(&late.apply(b.clone()));
        for ((g, x), y) in got.iter().zip(&wa).zip(&wb) {
            assert!((*g - 0.5 * (x + y)).abs() < 1e-6);
        }
        assert_eq!(late.updates(), 1001);
    }

    #[test]
    fn the_average_of_one_model_is_that_model_and_computes_its_logits() {
        let device = Device::flex();
        let a = cnn(&device, 3);
        let mut avg = WeightAverage::new(0.99);
        for _ in 0..5 {
            avg.update(&a);
        }
        let b = avg.apply(cnn(&device, 4));
        let x = Tensor::<4>::random([2, 1, 32, 32], burn::tensor::Distribution::Default, &device);
        let (la, lb) = (a.forward(x.clone()), b.forward(x));
        let diff = (la - lb).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
    }
}
