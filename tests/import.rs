//! Import of PyTorch state_dicts: name mapping, checks, and the same outputs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cnnsplitter::Model;
use cnnsplitter::model::import::import;

/// Writes `tensors` as a safetensors file (f32, plus optional i64 tensors) like PyTorch does.
fn write_state_dict(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, ints: &[&str]) {
    let int_bytes = 7i64.to_le_bytes().to_vec();
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .unwrap();
            (name.clone(), view)
        })
        .collect();
    for name in ints {
        views.push((
            name.to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![], &int_bytes).unwrap(),
        ));
    }
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The model's tensors renamed by `rename`.
fn renamed(model: &Model, rename: impl Fn(&str) -> String) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    model.weights.tensors.iter().map(|(n, t)| (rename(n), (t.shape.clone(), t.data.clone()))).collect()
}

#[test]
fn original_cnnsplitter_names_import_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    // ResCNN in the original code: conv blocks are nn.Sequential(conv, relu[, pool]) called
    // conv_{i}, the head nn.Sequential(flatten, dropout, linear) called classifier.
    let model = common::random_model("rescnn@0.25", [3, 32, 32], 7, 3);
    let path = tmp.path().join("rescnn.safetensors");
    let original = |n: &str| {
        let (layer, param) = n.split_once('.').unwrap();
        if layer == "classifier" { format!("classifier.2.{param}") } else { format!("{layer}.0.{param}") }
    };
    write_state_dict(&path, &renamed(&model, original), &[]);
    let got = import("rescnn@0.25", [3, 32, 32], None, &path).unwrap();
    assert_eq!(got.model.description.classes, 7, "classes from the classifier's shape");
    assert_eq!(got.model.weights, model.weights);
    assert!(got.mapping.iter().any(|(o, t)| o == "conv_3.weight" && t == "conv_3.0.weight"));

    // SimCNN's original names are cnnsplitter's own.
    let model = common::random_model("simcnn@0.125", [3, 32, 32], 10, 4);
    let path = tmp.path().join("simcnn.safetensors");
    write_state_dict(&path, &renamed(&model, |n| n.to_string()), &[]);
    assert_eq!(import("simcnn@0.125", [3, 32, 32], None, &path).unwrap().model.weights, model.weights);
}

#[test]
fn a_plain_sequential_imports_by_position_and_batchnorm_counters_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::random_model("simcnn-weak@0.5", [1, 28, 28], 5, 1);
    let index: BTreeMap<String, usize> =
        model.description.layers.iter().enumerate().map(|(i, l)| (l.name.clone(), i)).collect();
    let path = tmp.path().join("seq.safetensors");
    let positional = |n: &str| {
        let (layer, param) = n.split_once('.').unwrap();
        format!("{}.{param}", index[layer])
    };
    write_state_dict(&path, &renamed(&model, positional), &["1.num_batches_tracked"]);
    let got = import("simcnn-weak@0.5", [1, 28, 28], Some(5), &path).unwrap();
    assert_eq!(got.model.weights, model.weights);
    assert_eq!(got.skipped, vec!["1.num_batches_tracked".to_string()]);
    // The imported model gives the original's logits.
    let images = common::random_images(4, [1, 28, 28], 9);
    assert_eq!(common::burn_logits(&got.model, &images, 4), common::burn_logits(&model, &images, 4));
}

#[test]
fn mismatches_name_both_tensors_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::random_model("simcnn-weak@0.25", [3, 32, 32], 5, 1);
    let path = tmp.path().join("w.safetensors");
    write_state_dict(&path, &renamed(&model, |n| n.to_string()), &[]);
    // Another width: a shape error naming the file's tensor, ours, and both shapes.
    let err = import("simcnn-weak@0.5", [3, 32, 32], Some(5), &path).unwrap_err().to_string();
    assert!(err.contains("w.safetensors") && err.contains("conv_0.weight") && err.contains("[16, 3, 3, 3]"), "{err}");
    // A tensor the description does not have.
    let mut extra = renamed(&model, |n| n.to_string());
    extra.insert("aux.weight".into(), (vec![2], vec![0.0, 1.0]));
    write_state_dict(&path, &extra, &[]);
    let err = import("simcnn-weak@0.25", [3, 32, 32], Some(5), &path).unwrap_err().to_string();
    assert!(err.contains("aux.weight") && err.contains("matches no layer"), "{err}");
    // A missing tensor: what was looked for, and what the file has.
    let mut missing = renamed(&model, |n| n.to_string());
    missing.remove("conv_1.bias");
    write_state_dict(&path, &missing, &[]);
    let err = import("simcnn-weak@0.25", [3, 32, 32], Some(5), &path).unwrap_err().to_string();
    assert!(err.contains("conv_1.bias") && err.contains("the file has e.g."), "{err}");
    // Not a safetensors file.
    std::fs::write(&path, b"not safetensors").unwrap();
    let err = import("simcnn-weak@0.25", [3, 32, 32], Some(5), &path).unwrap_err().to_string();
    assert!(err.contains("w.safetensors") && err.contains("not a safetensors file"), "{err}");
}
