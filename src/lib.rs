//! cnnsplitter: split trained CNNs into per-class modules by removing convolution kernels,
//! recompose the modules, and patch weak models with them.
//!
//! The data flow shows in the modules: [`data`] (readers, mixes, pipeline) → [`model`]
//! (descriptions, weights, burn nets, counting, import) → [`train`] → [`modularize`] (importance,
//! sensitivity, genetic search; [`graph`] and [`decode`] cut the kernels) → [`patch`] →
//! [`experiment`] (the paper's protocols and reports); [`engine`] runs inference (burn or ONNX
//! Runtime), [`export`] writes ONNX, [`bench`] measures. The library never prints or exits; long
//! work reports through [`progress::Progress`].

#![warn(missing_docs)]

pub mod artifact;
pub mod bench;
pub mod choice;
pub mod data;
pub mod decode;
pub mod engine;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod files;
pub mod graph;
pub mod model;
pub mod modularize;
pub mod patch;
pub mod progress;
pub mod train;

pub use error::{Error, Result};
pub use model::Model;
