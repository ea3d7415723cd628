//! The pure-Rust engine: burn, on the device of the [`Compute`] it is made with.

use burn::module::Module;
use burn::tensor::Device;

use crate::compute::Compute;
use crate::engine::{Engine, PreparedModel};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::model::net::{Net, images_tensor, to_host_2d};

/// Runs models with burn (on the flex CPU backend, always available, unless the caller chose
/// another device).
#[derive(Debug, Clone)]
pub struct BurnEngine {
    device: Device,
}

impl BurnEngine {
    /// The engine on `compute`'s device.
    pub fn new(compute: &Compute) -> Self {
        BurnEngine { device: compute.device().clone() }
    }
}

impl Engine for BurnEngine {
    fn name(&self) -> &'static str {
        "burn"
    }

    fn prepare(&self, model: &Model) -> Result<Box<dyn PreparedModel>> {
        let net = Net::new(model, &self.device)?.valid();
        Ok(Box::new(BurnModel { net, device: self.device.clone(), input: model.description.input }))
    }

    /// burn's kernels share rayon's pool, which balances concurrent callers itself.
    fn concurrent(&self, _jobs: usize) -> Box<dyn Engine> {
        Box::new(self.clone())
    }
}

struct BurnModel {
    net: Net,
    device: Device,
    input: [usize; 3],
}

impl PreparedModel for BurnModel {
    fn logits(&self, images: &[f32], n: usize, batch: usize) -> Result<Vec<f32>> {
        let per_image: usize = self.input.iter().product();
        if images.len() != n * per_image {
            return Err(Error::Invalid(format!(
                "{n} images of shape {:?} need {} values, got {}",
                self.input,
                n * per_image,
                images.len()
            )));
        }
        let batch = batch.max(1);
        let mut out = Vec::with_capacity(n * self.classes());
        for start in (0..n).step_by(batch) {
            let m = batch.min(n - start);
            let [c, h, w] = self.input;
            let chunk = &images[start * per_image..(start + m) * per_image];
            let x = images_tensor(chunk, [m, c, h, w], &self.device)?;
            out.extend(to_host_2d(self.net.forward(x)));
        }
        Ok(out)
    }

    fn classes(&self) -> usize {
        self.net.description().classes
    }
}
