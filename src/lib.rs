//! cnnsplitter: split trained CNNs into per-class modules by removing convolution kernels,
//! recompose the modules, and patch weak models with them.
//!
//! The data flow shows in the modules: [`model`] (descriptions, weights, burn nets, counting)
//! → [`graph`] (channel dependency groups) → [`decode`] (kernel removal) → [`engine`]
//! (inference) → [`bench`] (measurements). The library never prints or exits; long work reports
//! through [`progress::Progress`].

pub mod bench;
pub mod data;
pub mod decode;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod export;
pub mod graph;
pub mod json;
pub mod model;
pub mod modularize;
pub mod patch;
pub mod progress;
pub mod train;

pub use error::{Error, Result};
pub use model::Model;
