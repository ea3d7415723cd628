//! ONNX import: every zoo architecture round-trips through our own export; hand-built graphs
//! (MatMul + bias, ReduceMean, Clip, Reshape, padded pools) give the expected model; broken or
//! unsupported files give clear errors, never a panic; the check against ONNX Runtime.

mod common;

use std::path::Path;

use cnnsplitter::Model;
use cnnsplitter::engine::import_check::check_against_file;
use cnnsplitter::export::onnx::{Attr, GraphBuilder, INPUT, OUTPUT, to_onnx};
use cnnsplitter::model::description::{Layer, LayerKind};
use cnnsplitter::model::onnx_import::from_onnx_bytes;
use cnnsplitter::model::zoo::ARCHITECTURES;
use common::*;

/// Layers with `input` naming the previous layer written as `None` (the same thing).
fn normalized(mut layers: Vec<Layer>) -> Vec<Layer> {
    for i in 1..layers.len() {
        if layers[i].input.as_deref() == Some(layers[i - 1].name.as_str()) {
            layers[i].input = None;
        }
    }
    layers
}

fn origin() -> &'static Path {
    Path::new("test.onnx")
}

#[test]
fn grouped_depthwise_and_concat_nets_round_trip_through_our_export() {
    for desc in [depthwise_net(), concat_net()] {
        let model = random_model_of(desc, 4);
        let imported = from_onnx_bytes(&to_onnx(&model).unwrap(), origin(), None).unwrap();
        assert_eq!(normalized(imported.model.description.layers.clone()), normalized(model.description.layers.clone()));
        assert_eq!(imported.model.weights, model.weights);
    }
}

#[test]
fn every_zoo_architecture_round_trips_through_our_export() {
    for (arch, _) in ARCHITECTURES {
        let (input, width) = match *arch {
            "simcnn-svhn-weak" | "rescnn-svhn-weak" => ([1, 28, 28], "1"),
            _ => ([3, 32, 32], "0.125"),
        };
        let name = format!("{arch}@{width}");
        let model = random_model(&name, input, 7, 2);
        let bytes = to_onnx(&model).unwrap();
        let imported = from_onnx_bytes(&bytes, origin(), None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = &imported.model;
        // The same layers (dropout is left out of an exported graph), with the same weights, bit
        // for bit.
        let want: Vec<Layer> = normalized(
            model.description.layers.iter().filter(|l| !matches!(l.kind, LayerKind::Dropout { .. })).cloned().collect(),
        );
        assert_eq!(normalized(got.description.layers.clone()), want, "{name}");
        assert_eq!((got.description.input, got.description.classes), (input, 7), "{name}");
        assert_eq!(got.weights, model.weights, "{name}");
        assert_eq!(imported.file_input, [None, Some(input[0]), Some(input[1]), Some(input[2])]);
    }
}

/// A graph with the ops PyTorch's exporters write that our export does not: MatMul + Add,
/// ReduceMean, Clip with constant bounds, Reshape, padded average pooling, a Gemm without transB.
/// `axes_input`: ReduceMean's axes as an input (opset 18, the default exporter) rather than an
/// attribute (opset 17, the graph's own opset, so ONNX Runtime runs only that form).
fn hand_built(batch: Option<usize>, axes_input: bool) -> (Vec<u8>, Vec<f32>) {
    let mut g = GraphBuilder::default();
    let w: Vec<f32> = (0..4 * 2 * 3 * 3).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
    g.initializer("conv.weight", &[4, 2, 3, 3], &w);
    g.initializer("conv.bias", &[4], &[0.1, -0.2, 0.3, 0.0]);
    g.node(
        "conv_node",
        "Conv",
        &[INPUT, "conv.weight", "conv.bias"],
        &["c"],
        vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))],
    );
    g.initializer("lo", &[], &[0.0]);
    g.initializer("hi", &[], &[6.0]);
    g.node("clip", "Clip", &["c", "lo", "hi"], &["r"], vec![]);
    g.node(
        "avg",
        "AveragePool",
        &["r"],
        &["p"],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ("count_include_pad", Attr::Int(1)),
        ],
    );
    if axes_input {
        g.initializer_i64("axes", &[2], &[2, 3]);
        g.node("mean", "ReduceMean", &["p", "axes"], &["m"], vec![("keepdims", Attr::Int(1))]);
    } else {
        g.node(
            "mean",
            "ReduceMean",
            &["p"],
            &["m"],
            vec![("axes", Attr::Ints(vec![-2, -1])), ("keepdims", Attr::Int(1))],
        );
    }
    g.initializer_i64("shape", &[2], &[-1, 4]);
    g.node("reshape", "Reshape", &["m", "shape"], &["f"], vec![]);
    let fc: Vec<f32> = (0..4 * 3).map(|i| (i as f32 - 6.0) / 7.0).collect();
    g.initializer("fc.weight", &[4, 3], &fc); // [in, out]: MatMul's layout
    g.node("matmul", "MatMul", &["f", "fc.weight"], &["mm"], vec![]);
    g.initializer("fc.bias", &[3], &[0.5, -0.5, 0.25]);
    g.node("bias", "Add", &["mm", "fc.bias"], &["o"], vec![]);
    g.node("drop", "Dropout", &["o"], &[OUTPUT], vec![]);
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[batch, Some(2), Some(6), Some(6)]));
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[batch, Some(3)]));
    (g.finish("test").unwrap(), w)
}

#[test]
fn a_hand_built_graph_gives_the_expected_layers_and_weights() {
    let (bytes, conv_weight) = hand_built(None, true);
    let imported = from_onnx_bytes(&bytes, origin(), None).unwrap();
    let (attr_form, _) = hand_built(None, false);
    assert_eq!(from_onnx_bytes(&attr_form, origin(), None).unwrap().model, imported.model, "both ReduceMean forms");
    let d = &imported.model.description;
    let kinds: Vec<(&str, &str)> = d.layers.iter().map(|l| (l.name.as_str(), l.kind.type_name())).collect();
    assert_eq!(
        kinds,
        [
            ("conv", "conv2d"),
            ("clip", "relu6"),
            ("avg", "avg_pool2d"),
            ("mean", "global_avg_pool"),
            ("reshape", "flatten"),
            ("fc", "linear")
        ]
    );
    assert_eq!(d.layers[2].kind, LayerKind::AvgPool2d { kernel: [3, 3], stride: [2, 2], padding: [1, 1] });
    assert_eq!(d.layers[5].kind, LayerKind::Linear { out_features: 3, bias: true });
    assert_eq!((d.input, d.classes), ([2, 6, 6], 3));
    assert_eq!(imported.model.weights.get("conv.weight").unwrap().data, conv_weight);
    // MatMul's [in, out] weight is stored transposed, as a Linear's [out, in].
    let fc = imported.model.weights.get("fc.weight").unwrap();
    assert_eq!(fc.shape, vec![3, 4]);
    assert_eq!(fc.data[1], (3.0 - 6.0) / 7.0, "row 0 holds input 1's weight of output 0: [in 1][out 0] = 3");
    assert_eq!(imported.model.weights.get("fc.bias").unwrap().data, vec![0.5, -0.5, 0.25]);
    assert!(imported.dropped.iter().any(|d| d.contains("Dropout")));

    // The imported model computes what the naive loops compute on the same description.
    let images = random_images(2, [2, 6, 6], 3);
    let err = relative_error(
        &burn_logits(&imported.model, &images, 2),
        &naive_logits(d, &imported.model.weights, &images, 2, &Default::default()),
    );
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn the_import_is_checked_against_the_file_in_onnx_runtime() {
    if cnnsplitter::engine::ort::environment().is_err() {
        missing_runtime("ONNX Runtime", "set ORT_DYLIB_PATH (see .ci/run)");
        return;
    }
    // A fixed batch of 2 (as torch.onnx.export writes without dynamic axes) runs in batches of 2.
    let (bytes, _) = hand_built(Some(2), false);
    let imported = from_onnx_bytes(&bytes, origin(), None).unwrap();
    let check = check_against_file(&imported, &bytes, &common::compute_with(1)).unwrap().unwrap();
    assert!(check.relative <= 1e-5 && check.images == 8, "{check:?}");

    // A model that does not compute what the file computes is caught.
    let mut wrong = imported.clone();
    wrong.model.weights.tensors.get_mut("fc.bias").unwrap().data[0] += 1.0;
    let check = check_against_file(&wrong, &bytes, &common::compute_with(1)).unwrap().unwrap();
    assert!(check.relative > 1e-2, "{check:?}");
}

#[test]
fn broken_and_unsupported_files_are_clear_errors() {
    let err =
        |bytes: &[u8], input: Option<[usize; 3]>| from_onnx_bytes(bytes, origin(), input).unwrap_err().to_string();
    let (bytes, _) = hand_built(None, true);

    // Truncated.
    let e = err(&bytes[..bytes.len() / 2], None);
    assert!(e.contains("test.onnx") && e.contains("not an ONNX model"), "{e}");

    // An op the description cannot express: named with its op and what is supported.
    let mut g = GraphBuilder::default();
    g.node("gate", "Sigmoid", &[INPUT], &[OUTPUT], vec![]);
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(3), Some(8), Some(8)]));
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(3)]));
    let e = err(&g.finish("test").unwrap(), None);
    assert!(e.contains("node `gate` (Sigmoid)") && e.contains("supports Conv"), "{e}");

    // An initializer whose shape does not fit the layer (a BatchNorm of 3 on 4 channels).
    let mut g = GraphBuilder::default();
    g.initializer("conv.weight", &[4, 3, 1, 1], &[0.5; 12]);
    g.node("conv", "Conv", &[INPUT, "conv.weight"], &["c"], vec![]);
    for p in ["s", "b", "m", "v"] {
        g.initializer(p, &[3], &[1.0; 3]);
    }
    g.node("bn", "BatchNormalization", &["c", "s", "b", "m", "v"], &["n"], vec![]);
    g.node("gap", "GlobalAveragePool", &["n"], &["p"], vec![]);
    g.node("flat", "Flatten", &["p"], &[OUTPUT], vec![]);
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(3), Some(8), Some(8)]));
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(4)]));
    let e = err(&g.finish("test").unwrap(), None);
    assert!(e.contains("test.onnx") && e.contains("bn.weight") && e.contains("[3]") && e.contains("[4]"), "{e}");

    // An input shape left open: asks for --input, and works with it.
    let mut g = GraphBuilder::default();
    g.initializer("fc.weight", &[2, 12], &[0.1; 24]);
    g.node("flat", "Flatten", &[INPUT], &["f"], vec![]);
    g.node("fc", "Gemm", &["f", "fc.weight"], &[OUTPUT], vec![("transB", Attr::Int(1))]);
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, None, None, None]));
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(2)]));
    let open = g.finish("test").unwrap();
    assert!(err(&open, None).contains("--input"));
    let m: Model = from_onnx_bytes(&open, origin(), Some([3, 2, 2])).unwrap().model;
    assert_eq!(m.description.layers.len(), 2);
    // A given shape that contradicts the file's.
    let e = err(&bytes, Some([3, 32, 32]));
    assert!(e.contains("takes 2x6x6 images, but --input says 3x32x32"), "{e}");

    // Asymmetric padding, a dilated convolution, a constant that is not a bias.
    for (attrs, says) in [
        (vec![("pads", Attr::Ints(vec![0, 0, 1, 1]))], "only symmetric padding"),
        (vec![("dilations", Attr::Ints(vec![2, 2]))], "dilated"),
    ] {
        let mut g = GraphBuilder::default();
        g.initializer("conv.weight", &[4, 3, 3, 3], &[0.5; 108]);
        g.node("conv", "Conv", &[INPUT, "conv.weight"], &[OUTPUT], attrs);
        g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(3), Some(8), Some(8)]));
        g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(4)]));
        let e = err(&g.finish("test").unwrap(), None);
        assert!(e.contains("node `conv` (Conv)") && e.contains(says), "{e}");
    }
}

#[test]
fn weights_stored_next_to_the_model_are_read_and_must_stay_next_to_it() {
    use onnx_protobuf::{Message, ModelProto};
    let (model, bytes, blob) = with_external_data("weights.bin");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("net.onnx");
    std::fs::write(tmp.path().join("weights.bin"), &blob).unwrap();
    let imported = from_onnx_bytes(&bytes, &path, None).unwrap();
    assert_eq!(imported.model.weights, model.weights);
    // Inlined again, the model is self-contained (ONNX Runtime runs it from memory).
    let inline = cnnsplitter::model::onnx_import::with_inline_data(&bytes, &path).unwrap();
    assert_eq!(from_onnx_bytes(&inline, Path::new("/nowhere/net.onnx"), None).unwrap().model, imported.model);

    // A short data file, and a location outside the model's folder, are errors.
    std::fs::write(tmp.path().join("weights.bin"), &blob[..blob.len() / 2]).unwrap();
    let e = from_onnx_bytes(&bytes, &path, None).unwrap_err().to_string();
    assert!(e.contains("lies beyond") && e.contains("weights.bin"), "{e}");
    let mut proto = ModelProto::parse_from_bytes(&bytes).unwrap();
    let t = &mut proto.graph.as_mut().unwrap().initializer[0];
    t.external_data[0].value = "../weights.bin".into();
    let e = from_onnx_bytes(&proto.write_to_bytes().unwrap(), &path, None).unwrap_err().to_string();
    assert!(e.contains("must be a file next to the model"), "{e}");
}

/// The resnet8 model of the external-data test with every initializer's bytes moved to the file
/// `location` (as PyTorch's default exporter writes): the model's bytes and the data's.
fn with_external_data(location: &str) -> (Model, Vec<u8>, Vec<u8>) {
    use onnx_protobuf::{Message, ModelProto, StringStringEntryProto};
    let model = random_model("resnet8-bn@0.25", [3, 32, 32], 4, 3);
    let mut proto = ModelProto::parse_from_bytes(&to_onnx(&model).unwrap()).unwrap();
    let mut blob = Vec::new();
    for t in proto.graph.as_mut().unwrap().initializer.iter_mut() {
        let entry = |k: &str, v: String| {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v;
            e
        };
        t.external_data = vec![
            entry("location", location.into()),
            entry("offset", blob.len().to_string()),
            entry("length", t.raw_data.len().to_string()),
        ];
        blob.append(&mut t.raw_data);
        t.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
    }
    (model, proto.write_to_bytes().unwrap(), blob)
}

#[test]
fn external_data_through_links_fifos_devices_and_short_files_is_refused_before_it_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("net.onnx");
    let (model, bytes, blob) = with_external_data("w.bin");
    let err = || from_onnx_bytes(&bytes, &path, None).unwrap_err().to_string();

    // A link to a file outside the model's folder (here, a large enough file elsewhere).
    let outside = tmp.path().join("secret.bin");
    std::fs::write(&outside, vec![7u8; blob.len() * 2]).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("w.bin")).unwrap();
    let e = err();
    assert!(e.contains("w.bin") && e.contains("outside the model's folder"), "{e}");
    // To a device that reads forever, through a link: refused at once, nothing read.
    std::fs::remove_file(dir.join("w.bin")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("w.bin")).unwrap();
    let e = err();
    assert!(e.contains("/dev/zero") && e.contains("outside the model's folder"), "{e}");

    // A FIFO (reading it would hang) and a folder in the model's folder.
    std::fs::remove_file(dir.join("w.bin")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join("w.bin")).status().unwrap().success());
    let e = err();
    assert!(e.contains("is not a regular file"), "{e}");
    std::fs::remove_file(dir.join("w.bin")).unwrap();
    std::fs::create_dir(dir.join("w.bin")).unwrap();
    let e = err();
    assert!(e.contains("is not a regular file"), "{e}");
    std::fs::remove_dir(dir.join("w.bin")).unwrap();

    // Too short by one byte.
    std::fs::write(dir.join("w.bin"), &blob[..blob.len() - 1]).unwrap();
    let e = err();
    assert!(e.contains("lies beyond") && e.contains(&format!("{} bytes", blob.len() - 1)), "{e}");

    // A link that stays inside the folder is followed.
    std::fs::remove_file(dir.join("w.bin")).unwrap();
    std::fs::create_dir(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/real.bin"), &blob).unwrap();
    std::os::unix::fs::symlink("data/real.bin", dir.join("w.bin")).unwrap();
    assert_eq!(from_onnx_bytes(&bytes, &path, None).unwrap().model.weights, model.weights);
}

#[test]
fn a_huge_fixed_batch_is_checked_on_a_few_images_with_an_open_batch_copy() {
    if cnnsplitter::engine::ort::environment().is_err() {
        missing_runtime("ONNX Runtime", "set ORT_DYLIB_PATH (see .ci/run)");
        return;
    }
    for batch in [1usize << 31, 1 << 57, i64::MAX as usize] {
        let (bytes, _) = hand_built(Some(batch), false);
        let imported = from_onnx_bytes(&bytes, origin(), None).unwrap();
        assert_eq!(imported.file_input[0], Some(batch));
        let check = check_against_file(&imported, &bytes, &common::compute_with(1)).unwrap().unwrap();
        assert_eq!(check.fixed_batch_replaced, Some(batch), "{check:?}");
        assert!(check.images == 8 && check.relative <= 1e-5 && check.non_finite == 0, "{check:?}");
    }
}

#[test]
fn an_infinite_scale_is_refused_not_imported_as_nan() {
    // Gemm with alpha = inf: scaled into the weights, which are then infinite: refused.
    let mut g = GraphBuilder::default();
    g.initializer("fc.weight", &[2, 12], &[0.1; 24]);
    g.node("flat", "Flatten", &[INPUT], &["f"], vec![]);
    g.node(
        "fc",
        "Gemm",
        &["f", "fc.weight"],
        &[OUTPUT],
        vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(f32::INFINITY))],
    );
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(3), Some(2), Some(2)]));
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(2)]));
    let bytes = g.finish("test").unwrap();
    let e = from_onnx_bytes(&bytes, origin(), None).unwrap_err().to_string();
    assert!(e.contains("test.onnx") && e.contains("tensor `fc.weight` holds 24 non-finite values"), "{e}");

    // The check itself counts NaN as a difference: a model whose bias is NaN against the file.
    if cnnsplitter::engine::ort::environment().is_err() {
        return;
    }
    let (bytes, _) = hand_built(None, false);
    let mut wrong = from_onnx_bytes(&bytes, origin(), None).unwrap();
    wrong.model.weights.tensors.get_mut("fc.bias").unwrap().data[1] = f32::NAN;
    let check = check_against_file(&wrong, &bytes, &common::compute_with(1)).unwrap().unwrap();
    assert!(check.non_finite > 0 && check.max_abs.is_infinite() && check.relative.is_infinite(), "{check:?}");
}

#[test]
fn twenty_thousand_nodes_of_one_name_import_in_well_under_a_second() {
    let mut g = GraphBuilder::default();
    g.initializer("conv.weight", &[2, 1, 1, 1], &[0.5, -0.5]);
    g.node("same", "Conv", &[INPUT, "conv.weight"], &["x0"], vec![]);
    let n = 20_000;
    for i in 0..n {
        g.node("same", "Relu", &[&format!("x{i}")], &[&format!("x{}", i + 1)], vec![]);
    }
    g.node("same", "GlobalAveragePool", &[&format!("x{n}")], &["p"], vec![]);
    g.node("same", "Flatten", &["p"], &[OUTPUT], vec![]);
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(1), Some(4), Some(4)]));
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(2)]));
    let bytes = g.finish("test").unwrap();
    let started = std::time::Instant::now();
    let imported = from_onnx_bytes(&bytes, origin(), None).unwrap();
    let took = started.elapsed();
    let names: std::collections::HashSet<&str> =
        imported.model.description.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names.len(), imported.model.description.layers.len(), "unique layer names");
    assert!(imported.model.description.layers.len() >= n, "{}", imported.model.description.layers.len());
    eprintln!("20,000 same-named nodes imported in {took:?}");
    assert!(took.as_secs_f64() < 1.0, "took {took:?} (a quadratic name search took 18-25 s)");
}
