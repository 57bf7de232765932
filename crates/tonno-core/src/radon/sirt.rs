//! Algebraic reconstruction of a sinogram by SIRT (the simultaneous
//! iterative reconstruction technique), the alternative to filtered
//! backprojection ([`super::reconstruct`]).
//!
//! With `A` the plane-integral projector ([`project_voxels`] times voxel
//! volume / `dt`) and `A^T` its exact adjoint ([`backproject`]), SIRT
//! iterates `x <- x + lambda C^-1 A^T R^-1 (b - A x)`, where `R = A 1` and
//! `C = A^T 1` are the row and column sums; with non-negativity each step is
//! clipped at 0. It minimises `||A x - b||^2` weighted by `R^-1`, and for
//! `0 < lambda <= 1` that weighted residual falls at every iteration.
//! Unlike filtered backprojection it has no second derivative to amplify
//! the noise of a profile, and it uses what the directions leave
//! unmeasured less wildly, so fewer directions can serve.
//!
//! Units: the sinogram in (volume unit) x mm^2 (plane integrals, as
//! [`super::plane_integrals`] gives them), the result in the volume unit,
//! laid out on the grid with `i` fastest.

use serde::{Deserialize, Serialize};

use super::{Sinogram, backproject, project_voxels};
use crate::error::{Error, Result};
use crate::geometry::Grid;

/// Options of [`sirt`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sirt {
    pub iterations: usize,
    /// The step `lambda`, in (0, 1].
    pub relaxation: f64,
    /// Clip every iterate at 0 (a density that cannot be negative).
    pub nonnegative: bool,
}

impl Default for Sirt {
    fn default() -> Self {
        Self {
            iterations: 50,
            relaxation: 1.0,
            nonnegative: true,
        }
    }
}

impl Sirt {
    pub fn validate(&self) -> Result<()> {
        if self.iterations == 0 || self.iterations > 10_000 {
            return Err(Error::invalid(
                "SIRT iterations",
                format!("{} (must be 1 to 10000)", self.iterations),
            ));
        }
        if !(self.relaxation > 0.0 && self.relaxation <= 1.0) {
            return Err(Error::invalid(
                "SIRT relaxation",
                format!("{} (must be in (0, 1])", self.relaxation),
            ));
        }
        Ok(())
    }
}

/// A SIRT reconstruction and how it converged.
#[derive(Debug, Clone)]
pub struct SirtOutcome {
    pub values: Vec<f32>,
    /// `||b - A x||` weighted by `R^-1`, relative to that of `x = 0`: before
    /// the first iteration (1) and after each one (`iterations + 1` values).
    pub residuals: Vec<f64>,
}

/// Reconstructs `sinogram` onto `grid` by SIRT. Voxels that no plane of the
/// sinogram reaches (outside its ball's slab in some direction) stay 0.
pub fn sirt(sinogram: &Sinogram, grid: &Grid, options: &Sirt) -> Result<SirtOutcome> {
    options.validate()?;
    if let Some(bad) = sinogram.values.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "sinogram",
            format!("{bad} (every profile value must be finite)"),
        ));
    }
    let geometry = &sinogram.geometry;
    let scale = (grid.world_from_voxel.determinant().abs() / geometry.dt_mm()) as f32;
    let project = |x: &[f32]| project_voxels(x, grid, geometry, scale);
    let back = |s: &Sinogram| backproject(s, grid, scale);
    let row_sums = project(&vec![1.0; grid.voxels()]).values;
    let ones = Sinogram::new(geometry.clone(), vec![1.0; row_sums.len()])?;
    let col_sums = back(&ones);
    // Planes that graze the grid have tiny row sums: dividing by them would
    // let a handful of voxels carry a whole profile's value.
    let row_floor = 1e-3 * row_sums.iter().fold(0.0f32, |m, &r| m.max(r));
    let inv_rows: Vec<f32> = row_sums
        .iter()
        .map(|&r| if r > row_floor { 1.0 / r } else { 0.0 })
        .collect();
    // A voxel that is outside some direction's slab is cut by fewer planes
    // than the rest: it is not determined by the data and is kept at 0.
    let reached = {
        let full = col_sums.iter().fold(0.0f32, |m, &c| m.max(c));
        let per_dir = full / geometry.directions() as f32;
        col_sums
            .iter()
            .map(|&c| c > full - 0.5 * per_dir)
            .collect::<Vec<bool>>()
    };
    let inv_cols: Vec<f32> = col_sums
        .iter()
        .zip(&reached)
        .map(|(&c, &ok)| if ok { 1.0 / c } else { 0.0 })
        .collect();
    let weighted_norm = |r: &[f32]| -> f64 {
        r.iter()
            .zip(&inv_rows)
            .map(|(&v, &w)| v as f64 * v as f64 * w as f64)
            .sum::<f64>()
            .sqrt()
    };
    let b = &sinogram.values;
    let b_norm = weighted_norm(b);
    let mut x = vec![0.0f32; grid.voxels()];
    let mut residuals = vec![1.0];
    let lambda = options.relaxation as f32;
    let mut residual = b.clone();
    for _ in 0..options.iterations {
        let weighted: Vec<f32> = residual.iter().zip(&inv_rows).map(|(r, w)| r * w).collect();
        let update = back(&Sinogram::new(geometry.clone(), weighted)?);
        for ((xi, u), c) in x.iter_mut().zip(&update).zip(&inv_cols) {
            *xi += lambda * u * c;
            if options.nonnegative && *xi < 0.0 {
                *xi = 0.0;
            }
        }
        let ax = project(&x).values;
        residual = b.iter().zip(&ax).map(|(b, a)| b - a).collect();
        residuals.push(if b_norm > 0.0 {
            weighted_norm(&residual) / b_norm
        } else {
            0.0
        });
    }
    Ok(SirtOutcome {
        values: x,
        residuals,
    })
}
