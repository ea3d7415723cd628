//! Model descriptions, the zoo, counting, the burn net and model files.

mod common;

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::Device;
use rand::SeedableRng;

use cnnsplitter::Model;
use cnnsplitter::model::count::count;
use cnnsplitter::model::description::{LayerKind, ModelDescription};
use cnnsplitter::model::net::{Net, images_tensor, to_host_2d};
use cnnsplitter::model::weights::{HostTensor, Weights};
use cnnsplitter::model::{DESCRIPTION_FILE, WEIGHTS_FILE, zoo};
use common::*;

#[test]
fn paper_models_have_the_published_kernel_and_mac_counts() {
    let simcnn = count(&zoo::build("simcnn", [3, 32, 32], 10).unwrap()).unwrap();
    assert_eq!((simcnn.kernels, simcnn.macs), (4224, 313_725_952));
    let rescnn = count(&zoo::build("rescnn", [3, 32, 32], 10).unwrap()).unwrap();
    assert_eq!((rescnn.kernels, rescnn.macs), (4288, 431_166_464));
    // Parameters as PyTorch counts them: sum of cin·cout·9 + cout over convs, plus the FC layers.
    let widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512];
    let mut cin = 3;
    let mut params = 0;
    for w in widths {
        params += cin * w * 9 + w;
        cin = w;
    }
    params += 512 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10;
    assert_eq!(simcnn.params, params);
    assert_eq!(simcnn.layers.iter().map(|l| l.macs).sum::<u64>(), simcnn.macs);
}

#[test]
fn width_multiplier_scales_convs_and_hidden_layers() {
    let d = zoo::build("simcnn@0.25", [3, 32, 32], 10).unwrap();
    assert_eq!(count(&d).unwrap().kernels, 4224 / 4);
    let fc13 = &d.layers[d.layer_index("fc_13").unwrap()].kind;
    assert_eq!(*fc13, LayerKind::Linear { out_features: 128, bias: true });
    assert_eq!(d.name, "simcnn@0.25");
    assert_eq!(zoo::scaled(64, 0.3), 19);
    assert_eq!(zoo::scaled(8, 0.0625), 1);
    assert_eq!(zoo::scaled(10, 0.25), 2, "2.5 rounds half to even, as Python does");
}

#[test]
fn weak_models_follow_the_spec() {
    let c = |arch: &str, input| count(&zoo::build(arch, input, 10).unwrap()).unwrap();
    let linear_in = |arch: &str, input| {
        let d = zoo::build(arch, input, 10).unwrap();
        let last = d.layers.last().unwrap().name.clone();
        count(&d).unwrap().layers.iter().find(|l| l.name == last).unwrap().params - 10
    };
    assert_eq!(c("simcnn-weak", [3, 32, 32]).kernels, 256);
    assert_eq!(linear_in("simcnn-weak", [3, 32, 32]), 256 * 10);
    assert_eq!(linear_in("rescnn-weak", [3, 32, 32]), 4096 * 10);
    assert_eq!(linear_in("simcnn-svhn-weak", [3, 32, 32]), 200 * 10);
    assert_eq!(linear_in("rescnn-svhn-weak", [3, 32, 32]), 512 * 10);
    // One-channel 28x28 digits work for the nets whose pooling allows it.
    assert_eq!(linear_in("simcnn-svhn-weak", [1, 28, 28]), 8 * 4 * 4 * 10);
    assert_eq!(c("rescnn-weak", [1, 28, 28]).kernels, 256);
}

#[test]
fn too_small_an_input_names_the_layer_and_the_input() {
    let err = zoo::build("simcnn", [1, 28, 28], 10).unwrap_err().to_string();
    assert!(err.contains("pool_12") && err.contains("1x28x28"), "{err}");
}

#[test]
fn unknown_architectures_and_bad_widths_are_clear_errors() {
    let err = zoo::build("vgg99", [3, 32, 32], 10).unwrap_err().to_string();
    assert!(err.contains("vgg99") && err.contains("simcnn"), "{err}");
    let err = zoo::build("simcnn@abc", [3, 32, 32], 10).unwrap_err().to_string();
    assert!(err.contains("abc"), "{err}");
}

#[test]
fn description_json_round_trips_and_checks_references() {
    let d = zoo::build("resnet8-bn", [3, 32, 32], 10).unwrap();
    let back = ModelDescription::from_json(&d.to_json()).unwrap();
    assert_eq!(back, d);

    let mut bad = d.clone();
    let add = bad.layers.iter().position(|l| matches!(l.kind, LayerKind::Add { .. })).unwrap();
    bad.layers[add].kind = LayerKind::Add { from: "fc".into() };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains(&bad.layers[add].name) && err.contains("not an earlier layer"), "{err}");

    let mut bad = zoo::build("rescnn@0.25", [3, 32, 32], 10).unwrap();
    let add = bad.layer_index("add_3").unwrap();
    bad.layers[add].kind = LayerKind::Add { from: "relu_0".into() };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("add_3") && err.contains("shapes differ"), "{err}");

    let mut bad = zoo::build("simcnn-weak", [3, 32, 32], 10).unwrap();
    bad.layers.retain(|l| l.name != "flatten");
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("fc_4") && err.contains("flatten"), "{err}");

    let mut bad = zoo::build("simcnn-weak", [3, 32, 32], 10).unwrap();
    bad.classes = 7;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("7 classes"), "{err}");
}

#[test]
fn unknown_layer_kind_in_json_is_a_clear_error() {
    let json = r#"{"name":"x","input":[3,8,8],"classes":2,"layers":[{"name":"a","type":"conv3d"}]}"#;
    let err = ModelDescription::from_json(json).unwrap_err().to_string();
    assert!(err.contains("conv3d") && err.contains("conv2d"), "{err}");
}

/// The burn net agrees with a naive loop implementation, for every layer kind.
#[test]
fn burn_forward_matches_a_naive_forward() {
    for (arch, input) in [
        ("resnet8-bn@0.5", [3, 16, 16]),
        ("rescnn-svhn-weak", [3, 32, 32]),
        ("simcnn-svhn-weak", [1, 28, 28]),
        ("rescnn@0.125", [3, 32, 32]),
        ("simcnn-weak@0.125", [3, 30, 30]),
    ] {
        let model = random_model(arch, input, 10, 21);
        let images = random_images(3, input, 22);
        let got = burn_logits(&model, &images, 3);
        let want = naive_logits(&model.description, &model.weights, &images, 3, &HashMap::new());
        let err = relative_error(&got, &want);
        assert!(err <= 1e-5, "{arch}: relative error {err}");
    }
}

#[test]
fn average_pooling_matches_the_naive_forward() {
    let mut d = zoo::build("simcnn-weak@0.125", [3, 32, 32], 10).unwrap();
    let i = d.layer_index("pool_1").unwrap();
    d.layers[i].kind = LayerKind::AvgPool2d { kernel: [2, 2], stride: [2, 2], padding: [0, 0] };
    let model = Model::new(d.clone(), Weights::init(&d, 3).unwrap()).unwrap();
    let images = random_images(2, [3, 32, 32], 1);
    let err = relative_error(
        &burn_logits(&model, &images, 2),
        &naive_logits(&model.description, &model.weights, &images, 2, &HashMap::new()),
    );
    assert!(err <= 1e-5, "relative error {err}");
}

#[test]
fn train_mode_applies_dropout_and_batch_statistics_eval_mode_does_not() {
    let device = Device::flex().autodiff();
    let eval_device = Device::flex();
    for arch in ["simcnn@0.125", "resnet8-bn@0.5"] {
        let model = random_model(arch, [3, 32, 32], 10, 31);
        let images = random_images(8, [3, 32, 32], 32);
        let eval = burn_logits(&model, &images, 8);

        let net = Net::new(&model, &device).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x = images_tensor(&images, [8, 3, 32, 32], &device).unwrap();
        let train_out = to_host_2d(net.forward_train(x, &mut rng));
        let err = relative_error(&train_out, &eval);
        assert!(err > 1e-3, "{arch}: train mode should differ from eval mode ({err})");

        // Train mode updates BatchNorm running statistics.
        let stats_changed = net
            .weights()
            .tensors
            .iter()
            .any(|(name, t)| name.ends_with(".running_mean") && t.data != model.weights.tensors[name].data);
        assert_eq!(stats_changed, arch.contains("bn"), "{arch}: running statistics after a train step");

        // valid() switches to eval mode and gives the engine's outputs.
        let valid = Net::new(&model, &device).unwrap().valid();
        let out = to_host_2d(valid.forward(images_tensor(&images, [8, 3, 32, 32], &eval_device).unwrap()));
        assert!(relative_error(&out, &eval) <= 1e-6, "{arch}: eval outputs differ");
    }
}

#[test]
fn gradients_reach_every_trainable_tensor() {
    let device = Device::flex().autodiff();
    let model = random_model("resnet8-bn@0.25", [3, 16, 16], 4, 41);
    let net = Net::new(&model, &device).unwrap();
    let x = images_tensor(&random_images(4, [3, 16, 16], 42), [4, 3, 16, 16], &device).unwrap();
    let loss = net.forward(x).powi_scalar(2).mean();
    let grads = loss.backward();
    let mut with_grad = 0;
    for layer in &net.layers {
        if let cnnsplitter::model::net::StateLayer::Conv(c) = layer {
            let g = c.weight.val().grad(&grads).expect("conv weight has a gradient");
            assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
            with_grad += 1;
        }
    }
    assert_eq!(with_grad, 9, "resnet8 has 9 convolutions");
}

#[test]
fn save_and_load_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model("resnet8-bn@0.5", [3, 32, 32], 10, 51);
    model.save(dir.path()).unwrap();
    let loaded = Model::load(dir.path()).unwrap();
    assert_eq!(loaded, model);
    let images = random_images(4, [3, 32, 32], 52);
    assert_eq!(burn_logits(&loaded, &images, 4), burn_logits(&model, &images, 4));
    assert!(!dir.path().join("model.safetensors.partial").exists());
    // The net's weights come back out unchanged (linear weights transposed twice).
    let net = Net::new(&model, &Device::flex()).unwrap();
    assert_eq!(net.to_model().unwrap(), model);
}

#[test]
fn a_weights_file_with_a_wrong_shape_names_the_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::init("simcnn-weak@0.25", [3, 32, 32], 10, 0).unwrap();
    model.save(dir.path()).unwrap();
    let mut weights = model.weights.clone();
    weights.tensors.insert("conv_1.weight".into(), HostTensor::full(vec![16, 15, 3, 3], 0.0));
    std::fs::write(dir.path().join(WEIGHTS_FILE), weights.to_safetensors().unwrap()).unwrap();
    let err = Model::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("conv_1.weight") && err.contains("[16, 15, 3, 3]") && err.contains("[16, 16, 3, 3]"), "{err}");
    assert!(err.contains(WEIGHTS_FILE), "the error names the file: {err}");
}

#[test]
fn broken_model_folders_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::init("simcnn-weak@0.25", [3, 32, 32], 10, 0).unwrap();
    model.save(dir.path()).unwrap();

    // Writes `weights` into the folder and returns the error of loading it.
    let load_error = |weights: &Weights| {
        std::fs::write(dir.path().join(WEIGHTS_FILE), weights.to_safetensors().unwrap()).unwrap();
        Model::load(dir.path()).unwrap_err().to_string()
    };
    let mut weights = model.weights.clone();
    weights.tensors.remove("fc_4.bias");
    let err = load_error(&weights);
    assert!(err.contains("fc_4.bias") && err.contains("missing"), "{err}");

    let mut weights = model.weights.clone();
    weights.tensors.insert("conv_9.weight".into(), HostTensor::full(vec![1], 0.0));
    let err = load_error(&weights);
    assert!(err.contains("conv_9.weight") && err.contains("no layer"), "{err}");

    std::fs::write(dir.path().join(WEIGHTS_FILE), b"not safetensors").unwrap();
    let err = Model::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains(WEIGHTS_FILE) && err.contains("safetensors"), "{err}");

    let json = r#"{"name":"x","input":[3,8,8],"classes":2,"layers":[{"name":"a","type":"conv3d"}]}"#;
    std::fs::write(dir.path().join(DESCRIPTION_FILE), json).unwrap();
    let err = Model::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains(DESCRIPTION_FILE) && err.contains("conv3d"), "{err}");

    let err = Model::load(&dir.path().join("nowhere")).unwrap_err().to_string();
    assert!(err.contains("nowhere") && err.contains("model folder"), "{err}");
}

#[test]
fn same_seed_gives_the_same_weights() {
    let a = Model::init("rescnn@0.25", [3, 32, 32], 10, 5).unwrap();
    let b = Model::init("rescnn@0.25", [3, 32, 32], 10, 5).unwrap();
    let c = Model::init("rescnn@0.25", [3, 32, 32], 10, 6).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Conv weights have the authors' code's spread: std = sqrt(2 / (9 · out)).
    let w = &a.weights.tensors["conv_4.weight"].data;
    let std = (w.iter().map(|v| (v * v) as f64).sum::<f64>() / w.len() as f64).sqrt();
    let want = (2.0 / (9.0 * 64.0f64)).sqrt();
    assert!((std / want - 1.0).abs() < 0.05, "std {std} vs {want}");
    assert!(a.weights.tensors["conv_4.bias"].data.iter().all(|&b| b == 0.0));
}

/// `Artifact::open` tells the four folder types apart by the files each owns, and a folder that
/// is none of them is an error naming it.
#[test]
fn artifact_open_tells_folder_types_apart() {
    use cnnsplitter::folders::Artifact;
    let tmp = tempfile::tempdir().unwrap();
    let model = random_model("simcnn-weak@0.125", [1, 16, 16], 3, 1);
    let at = |name: &str| tmp.path().join(name);

    model.save(&at("model")).unwrap();
    model.save(&at("run")).unwrap();
    std::fs::write(at("run").join("config.json"), "{}").unwrap();
    std::fs::write(at("run").join("train.jsonl"), "").unwrap();
    std::fs::create_dir_all(at("fresh-run/checkpoint")).unwrap();
    std::fs::write(at("fresh-run").join("config.json"), "{}").unwrap();
    std::fs::create_dir_all(at("modularization")).unwrap();
    std::fs::write(at("modularization").join("config.json"), "{}").unwrap();
    std::fs::write(at("modularization").join("importance.json"), "{}").unwrap();
    model.save(&at("patched").join("weak")).unwrap();
    std::fs::write(at("patched").join("patch.json"), "{}").unwrap();
    std::fs::create_dir_all(at("empty")).unwrap();

    let kind = |name: &str| Artifact::open(&at(name)).map(|a| a.kind());
    assert_eq!(kind("model").unwrap(), "model");
    assert_eq!(kind("run").unwrap(), "training run");
    assert_eq!(kind("fresh-run").unwrap(), "training run");
    assert_eq!(kind("modularization").unwrap(), "modularization");
    assert_eq!(kind("patched").unwrap(), "patched model");

    // A single model loads from a model folder and a run with a kept model, not from the others.
    assert_eq!(Artifact::open(&at("model")).unwrap().load_model().unwrap().description, model.description);
    assert_eq!(Artifact::open(&at("run")).unwrap().load_model().unwrap().description, model.description);
    for (name, says) in
        [("fresh-run", "no finished epoch"), ("modularization", "modules/class_00"), ("patched", "its weak model")]
    {
        let e = Artifact::open(&at(name)).unwrap().load_model().unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(says), "{name}: {e}");
    }
    for (name, says) in [("empty", "none of model.json"), ("missing", "does not exist")] {
        let e = Artifact::open(&at(name)).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(says), "{name}: {e}");
    }
}

#[test]
fn a_prefix_then_its_suffix_computes_the_whole_model_and_no_residual_branch_crosses_a_cut() {
    use cnnsplitter::model::split::{latest_cut, prefix, suffix};
    for (arch, input) in [("simcnn@0.25", [3, 32, 32]), ("rescnn@0.25", [3, 32, 32]), ("resnet8-bn@0.5", [3, 16, 16])] {
        let model = random_model(arch, input, 4, 2);
        let desc = &model.description;
        let n = 5;
        let images = random_images(n, input, 3);
        let whole = burn_logits(&model, &images, n);
        // Independently of the cut rule: a layer adding (or reading) an earlier tensor keeps that
        // tensor alive up to it, so no cut may fall strictly inside that span.
        let mut spans = Vec::new();
        for i in 0..desc.layers.len() {
            if let Some(from) = desc.add_operand(i) {
                spans.push((from, i));
            }
            if let Some(cnnsplitter::model::description::Source::Layer(k)) = desc.source(i) {
                spans.push((k, i));
            }
        }
        let mut usable = 0;
        for limit in 0..desc.layers.len() {
            let cut = latest_cut(desc, limit);
            assert!(cut <= limit, "{arch}: cut {cut} after limit {limit}");
            assert!(
                spans.iter().all(|&(from, to)| !(from + 1 < cut && cut <= to)),
                "{arch}: the cut before layer {cut} splits a branch {spans:?}"
            );
            if cut == 0 || cut != limit {
                continue;
            }
            usable += 1;
            let activations = burn_logits(&prefix(&model, cut).unwrap(), &images, n);
            let tail = suffix(&model, cut).unwrap();
            let got = burn_logits(&tail, &activations, n);
            assert_eq!(got, whole, "{arch}: split before layer {cut} ({})", desc.layers[cut].name);
        }
        assert!(usable >= 5, "{arch}: only {usable} usable cuts");
        // A cut inside a residual branch is refused with a message, not a panic.
        if let Some(&(from, to)) = spans.iter().find(|&&(from, to)| to > from + 2) {
            let inside = from + 2;
            assert!(inside <= to);
            let err = suffix(&model, inside).unwrap_err().to_string();
            assert!(err.contains("cannot be split"), "{err}");
        }
    }
}
