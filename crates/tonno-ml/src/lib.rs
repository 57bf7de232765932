//! tonno-ml: 2D slice encoders, their training from image-level labels, and
//! inference (ToNNO and the CAM methods). The only tonno crate that depends
//! on the deep-learning framework (burn).

pub mod average;
pub mod bench;
pub mod cam;
pub mod config;
pub mod decision;
pub mod device;
pub mod encoder;
pub mod error;
pub mod infer;
pub mod methods;
pub mod pipeline;
pub mod run;
pub mod train;

pub use error::{Error, Result};
