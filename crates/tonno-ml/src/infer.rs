//! Batched forward passes of an encoder over slices held on the CPU.
//! Input slices are `(N, C, P, P)` row-major f32; outputs one logit per
//! slice (the first class).

use burn::prelude::*;

use crate::encoder::Encoder;
use crate::error::{Error, Result};

/// Logits of `n` slices of `channels x pixels x pixels`, in batches of
/// `batch` (the model must be in validation mode, on `device`).
pub fn logits(
    encoder: &Encoder,
    device: &Device,
    slices: &[f32],
    channels: usize,
    pixels: usize,
    batch: usize,
) -> Result<Vec<f32>> {
    let per = channels * pixels * pixels;
    if per == 0 || !slices.len().is_multiple_of(per) {
        return Err(Error::invalid(
            "slices",
            format!(
                "{} values are not a whole number of {channels}x{pixels}x{pixels} slices",
                slices.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(slices.len() / per);
    for chunk in slices.chunks(per * batch.max(1)) {
        let n = chunk.len() / per;
        let x = Tensor::<4>::from_data(
            TensorData::new(chunk.to_vec(), [n, channels, pixels, pixels]),
            device,
        );
        let y = encoder.forward(x);
        let classes = y.dims()[1];
        let v: Vec<f32> = y
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::invalid("encoder output", format!("{e:?}")))?;
        out.extend(v.chunks(classes).map(|c| c[0]));
    }
    Ok(out)
}
