//! Export of models to ONNX.

pub mod onnx;
