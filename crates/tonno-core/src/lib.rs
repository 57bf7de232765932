//! tonno-core: volumes, medical image formats, tomographic geometry, the 3D
//! Radon transform and its inverse, the slices an encoder is trained and
//! run on, synthetic data and metrics, with no deep-learning dependency.
//!
//! ```
//! use std::sync::Arc;
//! use tonno_core::{affine::Affine, geometry::{Ball, TomoGeometry}, radon, volume::Volume};
//!
//! // A 16^3 cube of ones, reconstructed from its own plane integrals.
//! let v = Volume::from_fn([16, 16, 16], Affine::identity(), |i, j, k| {
//!     ((4..12).contains(&i) && (4..12).contains(&j) && (4..12).contains(&k)) as u8 as f32
//! })
//! .unwrap();
//! let geometry = Arc::new(TomoGeometry::fibonacci(Ball::covering(&v), 32, 32, 32, 0.0).unwrap());
//! let rec = radon::reconstruct_volume(&v, 0, &geometry, &radon::Filter::default()).unwrap();
//! assert!(rec.get(8, 8, 8, 0) > 0.8 && rec.get(0, 0, 0, 0).abs() < 0.2);
//! ```

pub mod affine;
pub mod error;
pub mod eval;
pub mod fuzz;
pub mod geometry;
pub mod hessian;
pub mod io;
pub mod metrics;
pub mod normalize;
pub mod radon;
pub mod rng;
pub mod sampler;
pub mod synth;
pub mod volume;

pub use error::{Error, Result};
