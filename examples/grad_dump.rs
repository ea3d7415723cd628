//! Dumps a random model, a batch, and burn's loss gradients (for comparison with PyTorch).
use burn::tensor::{Device, Int, Tensor, TensorData};
use cnnsplitter::Model;
use cnnsplitter::model::net::{Net, ParamVisitor, images_tensor};
use cnnsplitter::model::weights::{HostTensor, Weights};
struct G<'a>(&'a burn::tensor::Gradients, Weights);
impl ParamVisitor for G<'_> {
    fn visit<const D: usize>(&mut self, name: &str, p: &mut burn::module::Param<Tensor<D>>) {
        let g = p.val().grad(self.0).unwrap();
        let shape = g.dims().to_vec();
        let data = g.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        self.1.tensors.insert(name.to_string(), HostTensor { shape, data });
    }
}
fn main() {
    let arch = std::env::args().nth(1).unwrap();
    let model = Model::init(&arch, [1, 32, 32], 5, 0).unwrap();
    model.save(std::path::Path::new("/tmp/gd/model")).unwrap();
    let n = 16;
    let images = cnnsplitter::engine::random_images(n, [1, 32, 32], 1);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 5).collect();
    let mut w = Weights::default();
    w.tensors.insert("images".into(), HostTensor { shape: vec![n, 1, 32, 32], data: images.clone() });
    std::fs::write("/tmp/gd/batch.safetensors", w.to_safetensors().unwrap()).unwrap();
    let device = Device::flex().autodiff();
    let mut net = Net::new(&model, &device).unwrap();
    let x = images_tensor(&images, [n, 1, 32, 32], &device).unwrap();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &device);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new().init(&device).forward(net.forward(x), y);
    println!("burn loss {}", loss.clone().into_scalar::<f32>());
    let grads = loss.backward();
    let mut g = G(&grads, Weights::default());
    net.visit_params_mut(&mut g);
    std::fs::write("/tmp/gd/grads.safetensors", g.1.to_safetensors().unwrap()).unwrap();
}
