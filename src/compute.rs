//! Where the library computes: a burn device and a thread count, chosen once by the caller (the
//! binary) and handed down to training, kernel importance and the burn engine. The library never
//! picks a device itself.

use burn::tensor::Device;

/// A device and the number of compute threads the work may use.
#[derive(Debug, Clone)]
pub struct Compute {
    device: Device,
    threads: usize,
}

impl Compute {
    /// Work on `device` with `threads` compute threads (at least one is counted).
    pub fn new(device: Device, threads: usize) -> Self {
        Compute { device, threads: threads.max(1) }
    }

    /// The burn device training, importance and the burn engine run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute threads (ONNX Runtime's intra-op threads, the module jobs' share, the thread
    /// count a training run records).
    pub fn threads(&self) -> usize {
        self.threads
    }
}
