//! Export of models to ONNX.

pub mod composite;
pub mod onnx;
