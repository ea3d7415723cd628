//! cnnsplitter: split trained CNNs into per-class modules by removing convolution kernels,
//! recompose the modules, and patch weak models with them.
//!
//! The data flow shows in the modules: [`data`] (readers, mixes, pipeline) → [`model`]
//! (descriptions, weights, burn nets, counting, import) → [`train`] → [`modularize`] (importance,
//! sensitivity, search; [`graph`] and [`decode`] cut the kernels) → [`patch`] → [`experiment`]
//! (the paper's protocols and reports); [`engine`] runs inference (burn or ONNX Runtime),
//! [`export`] writes ONNX, [`bench`] measures. The library never prints or exits; long work
//! reports through [`progress::Progress`].
//!
//! The floors, from the ground up (a module imports only from its own floor or below, without
//! circles; `tests/layers.rs` checks it):
//!
//! | floor | modules |
//! | --- | --- |
//! | ground | `error`, `seed`, `choice`, `compute`, `records`, `progress`, `files` |
//! | descriptions and data | `model`, `graph`, `decode`, `export`, `data`, `folders` |
//! | running | `engine` |
//! | measuring | `eval` |
//! | stages | `train`, then `modularize`, then `patch` |
//! | protocols | `experiment`, `bench` |

#![warn(missing_docs)]

pub mod bench;
pub mod choice;
pub mod compute;
pub mod data;
pub mod decode;
pub mod engine;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod files;
pub mod folders;
pub mod graph;
pub mod model;
pub mod modularize;
pub mod patch;
pub mod progress;
pub mod records;
pub mod seed;
pub mod train;

pub use compute::Compute;
pub use error::{Error, Result};
pub use model::Model;
