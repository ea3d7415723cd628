//! Decode (kernel removal) against independent computations.

mod common;

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::decode::{decode, random_keep_masks, zero_removed_inputs};
use cnnsplitter::graph::channel_groups::ChannelGroups;
use cnnsplitter::model::count::count;
use cnnsplitter::model::description::{LayerKind, ModelDescription};
use common::*;

/// For each consumer layer (a convolution other than a depthwise one, or a linear layer), the
/// removed input channels (and positions per channel for linear layers), read from the layouts.
fn removed_inputs(
    desc: &ModelDescription,
    groups: &ChannelGroups,
    masks: &[Vec<bool>],
) -> HashMap<usize, (Vec<usize>, usize)> {
    let mut zero = HashMap::new();
    for (layer, channels) in groups.layers.iter().enumerate() {
        let consumer = matches!(desc.layers[layer].kind, LayerKind::Conv2d { .. } | LayerKind::Linear { .. });
        let removed = channels.input.removed(masks);
        if consumer && !channels.depthwise && !removed.is_empty() {
            zero.insert(layer, (removed, channels.flat_positions.unwrap_or(1)));
        }
    }
    zero
}

#[test]
fn all_ones_masks_give_the_original_network() {
    for arch in ["simcnn@0.25", "rescnn@0.25", "resnet8-bn@0.5", "mobilenetv2@0.25", "resnet18@0.125", "vgg16-bn@0.125"]
    {
        let model = random_model(arch, [3, 32, 32], 10, 1);
        let groups = ChannelGroups::derive(&model.description).unwrap();
        let decoded = decode(&model, &groups.keep_all()).unwrap();
        assert_eq!(decoded, model, "{arch}: decoding all-ones masks changed the model");
        let images = random_images(4, [3, 32, 32], 2);
        let a = burn_logits(&model, &images, 4);
        let b = burn_logits(&decoded, &images, 4);
        let max_abs = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(max_abs <= 1e-6, "{arch}: max abs difference {max_abs}");
    }
}

/// Decoded logits equal the naive forward pass of the original network with the removed
/// channels zeroed at each consumer's input, and the weight-zeroing reference agrees.
fn check_random_masks(arch: &str, input: [usize; 3], seed: u64, naive_images: usize) {
    let model = random_model(arch, input, 10, seed);
    let groups = ChannelGroups::derive(&model.description).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for keep in [0.3, 0.6] {
        let masks = random_keep_masks(&groups, keep, &mut rng);
        assert!(masks.iter().any(|m| m.iter().any(|k| !k)), "the masks must remove something");
        let module = decode(&model, &masks).unwrap();

        // The module is physically smaller: every conv keeps exactly its group's kept count.
        for (i, layer) in module.description.layers.iter().enumerate() {
            if let (LayerKind::Conv2d { out_channels, .. }, Some(g)) =
                (&layer.kind, groups.layers[i].output.single_group())
            {
                assert_eq!(*out_channels, masks[g].iter().filter(|k| **k).count(), "{arch} {}", layer.name);
            }
        }

        let images = random_images(naive_images, input, seed + 7);
        let got = burn_logits(&module, &images, naive_images);
        let want = naive_logits(
            &model.description,
            &model.weights,
            &images,
            naive_images,
            &removed_inputs(&model.description, &groups, &masks),
        );
        let err = relative_error(&got, &want);
        assert!(err <= 1e-5, "{arch} keep {keep}: decoded vs naive masked original, relative error {err}");

        let more = random_images(32, input, seed + 8);
        let reference = zero_removed_inputs(&model, &masks).unwrap();
        let err = relative_error(&burn_logits(&module, &more, 32), &burn_logits(&reference, &more, 32));
        assert!(err <= 1e-5, "{arch} keep {keep}: decoded vs zeroed-weights original, relative error {err}");
    }
}

#[test]
fn random_masks_on_simcnn_match_the_masked_original() {
    check_random_masks("simcnn@0.25", [3, 32, 32], 3, 2);
}

#[test]
fn random_masks_on_rescnn_match_the_masked_original() {
    check_random_masks("rescnn@0.25", [3, 32, 32], 4, 2);
}

#[test]
fn random_masks_on_a_batchnorm_resnet_match_the_masked_original() {
    check_random_masks("resnet8-bn@0.5", [3, 32, 32], 5, 3);
}

#[test]
fn random_masks_on_the_standard_families_match_the_masked_original() {
    // Depthwise groups (MobileNetV2), projection shortcuts (ResNet-18), BatchNorm VGG.
    check_random_masks("mobilenetv2@0.25", [3, 32, 32], 9, 1);
    check_random_masks("resnet18@0.125", [3, 32, 32], 10, 1);
    check_random_masks("vgg16-bn@0.125", [3, 32, 32], 11, 1);
}

#[test]
fn flatten_mapping_is_channel_major_where_the_flattened_map_is_larger_than_1x1() {
    // H·W at the flatten: simcnn-weak 2x2, simcnn-svhn-weak on 28x28 4x4, rescnn-weak 8x8.
    check_random_masks("simcnn-weak@0.25", [3, 32, 32], 6, 3);
    check_random_masks("simcnn-svhn-weak", [1, 28, 28], 7, 4);
    check_random_masks("rescnn-weak@0.25", [3, 32, 32], 8, 3);
}

#[test]
fn residual_pairs_keep_the_same_kernels() {
    let model = random_model("rescnn@0.25", [3, 32, 32], 10, 9);
    let groups = ChannelGroups::derive(&model.description).unwrap();
    assert_eq!(groups.groups.len(), 9, "12 convs with 3 residual pairs make 9 groups");
    let labels: Vec<String> = (0..9).map(|g| groups.group_label(&model.description, g)).collect();
    for pair in ["conv_1+conv_3", "conv_5+conv_7", "conv_9+conv_11"] {
        assert!(labels.contains(&pair.to_string()), "missing group {pair}: {labels:?}");
    }
    let masks = random_keep_masks(&groups, 0.5, &mut ChaCha8Rng::seed_from_u64(1));
    let module = decode(&model, &masks).unwrap();
    let width = |name: &str| {
        let i = module.description.layer_index(name).unwrap();
        match module.description.layers[i].kind {
            LayerKind::Conv2d { out_channels, .. } => out_channels,
            _ => unreachable!(),
        }
    };
    assert_eq!(width("conv_1"), width("conv_3"));
    assert_eq!(width("conv_5"), width("conv_7"));
    assert_eq!(width("conv_9"), width("conv_11"));
}

#[test]
fn kept_kernels_follow_the_original_order() {
    let model = random_model("simcnn-weak@0.25", [3, 32, 32], 10, 10);
    let groups = ChannelGroups::derive(&model.description).unwrap();
    let mut masks = groups.keep_all();
    masks[0] = (0..masks[0].len()).map(|c| c % 3 != 1).collect();
    let module = decode(&model, &masks).unwrap();
    let original = &model.weights.tensors["conv_0.weight"];
    let sliced = &module.weights.tensors["conv_0.weight"];
    let per_kernel: usize = original.shape[1..].iter().product();
    let kept: Vec<usize> = (0..masks[0].len()).filter(|&c| masks[0][c]).collect();
    for (row, &c) in kept.iter().enumerate() {
        assert_eq!(
            sliced.data[row * per_kernel..(row + 1) * per_kernel],
            original.data[c * per_kernel..(c + 1) * per_kernel],
            "kernel {c} should be row {row}"
        );
    }
}

#[test]
fn an_empty_or_misshaped_mask_is_an_error_that_names_the_layer() {
    let model = Model::init("rescnn@0.25", [3, 32, 32], 10, 0).unwrap();
    let groups = ChannelGroups::derive(&model.description).unwrap();
    let mut masks = groups.keep_all();
    masks[1].fill(false);
    let err = decode(&model, &masks).unwrap_err().to_string();
    assert!(err.contains("conv_1+conv_3") && err.contains("at least one kernel"), "{err}");

    let mut masks = groups.keep_all();
    masks[0].pop();
    let err = decode(&model, &masks).unwrap_err().to_string();
    assert!(err.contains("conv_0") && err.contains("entries"), "{err}");

    let err = decode(&model, &groups.keep_all()[1..]).unwrap_err().to_string();
    assert!(err.contains("9 channel groups"), "{err}");
}

/// MACs of a decoded SimCNN counted by hand from the kept kernels: conv i costs
/// kept_out · kept_in · 9 · H·W at its resolution, then the three FC layers.
#[test]
fn decoded_module_macs_equal_a_naive_count() {
    let model = Model::init("simcnn@0.5", [3, 32, 32], 10, 0).unwrap();
    let groups = ChannelGroups::derive(&model.description).unwrap();
    let masks = random_keep_masks(&groups, 0.4, &mut ChaCha8Rng::seed_from_u64(11));
    let module = decode(&model, &masks).unwrap();
    let kept: Vec<u64> = masks.iter().map(|m| m.iter().filter(|k| **k).count() as u64).collect();
    let pools_after = [1, 3, 6, 9, 12];
    let (mut side, mut cin, mut naive) = (32u64, 3u64, 0u64);
    for (i, &k) in kept.iter().enumerate() {
        naive += k * cin * 9 * side * side;
        cin = k;
        if pools_after.contains(&i) {
            side /= 2;
        }
    }
    let hidden = 256u64;
    naive += cin * hidden + hidden * hidden + hidden * 10;
    assert_eq!(count(&module.description).unwrap().macs, naive);
    assert_eq!(count(&module.description).unwrap().kernels as u64, kept.iter().sum::<u64>());
}

#[test]
fn padding_channel_groups_to_a_multiple_leaves_outputs_unchanged() {
    use cnnsplitter::decode::pad_channels;
    for arch in ["simcnn@0.25", "rescnn@0.25", "resnet8-bn@0.5", "simcnn-weak@0.25"] {
        let model = random_model(arch, [3, 32, 32], 10, 12);
        let groups = ChannelGroups::derive(&model.description).unwrap();
        let masks = random_keep_masks(&groups, 0.4, &mut ChaCha8Rng::seed_from_u64(13));
        let module = decode(&model, &masks).unwrap();
        let padded = pad_channels(&module, 8).unwrap();
        let padded_groups = ChannelGroups::derive(&padded.description).unwrap();
        assert!(padded_groups.groups.iter().all(|g| g.width % 8 == 0), "{arch}: every group is a multiple of 8");
        assert!(
            count(&padded.description).unwrap().kernels > count(&module.description).unwrap().kernels,
            "{arch}: something was padded"
        );
        let images = random_images(6, [3, 32, 32], 14);
        let err = relative_error(&burn_logits(&padded, &images, 6), &burn_logits(&module, &images, 6));
        assert!(err <= 1e-5, "{arch}: padded vs module relative error {err}");
        assert_eq!(pad_channels(&padded, 8).unwrap(), padded, "{arch}: padding twice changes nothing");
    }
}

/// One `Decoder` reused over many masks gives what a fresh decode of each gives, and masks
/// checked for one model are refused by another model's decoder.
#[test]
fn a_reused_decoder_equals_fresh_decodes_and_refuses_other_models_masks() {
    use cnnsplitter::decode::Decoder;
    let model = random_model("rescnn@0.25", [3, 32, 32], 10, 21);
    let decoder = Decoder::new(&model).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for keep in [0.2, 0.5, 0.9] {
        let raw = random_keep_masks(decoder.groups(), keep, &mut rng);
        let masks = decoder.keep_masks(raw.clone()).unwrap();
        assert_eq!(decoder.decode(&masks).unwrap(), decode(&model, &raw).unwrap(), "keep {keep}");
        assert_eq!(decoder.zero_removed_inputs(&masks).unwrap(), zero_removed_inputs(&model, &raw).unwrap());
        for (g, mask) in raw.iter().enumerate() {
            let expected: Vec<usize> = (0..mask.len()).filter(|&c| mask[c]).collect();
            assert_eq!(masks.kept(g), expected);
        }
    }
    let other = random_model("simcnn@0.25", [3, 32, 32], 10, 22);
    let other_decoder = Decoder::new(&other).unwrap();
    let theirs = other_decoder.keep_masks(ChannelGroups::derive(&other.description).unwrap().keep_all()).unwrap();
    let err = decoder.decode(&theirs).unwrap_err().to_string();
    assert!(err.contains("another model"), "{err}");
}

#[test]
fn depthwise_grouped_and_padded_layers_decode_to_the_masked_original() {
    let model = random_model_of(depthwise_net(), 3);
    let desc = &model.description;
    let input = desc.input;
    let images = random_images(3, input, 4);

    // The burn forward pass of the new layers equals the naive loops.
    let err = relative_error(
        &burn_logits(&model, &images, 3),
        &naive_logits(desc, &model.weights, &images, 3, &HashMap::new()),
    );
    assert!(err <= 1e-5, "burn vs naive forward: relative error {err}");

    // Groups: stem + projection (the add), expansion + depthwise, narrow + the second depthwise;
    // the grouped convolution's input (widen) and output stay out, and are named.
    let groups = ChannelGroups::derive(desc).unwrap();
    let labels: Vec<String> = (0..groups.groups.len()).map(|g| groups.group_label(desc, g)).collect();
    assert_eq!(labels, ["stem+project", "expand+dw", "narrow+dw2"]);
    let grouped = desc.layer_index("grouped").unwrap();
    assert_eq!(groups.uncut.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [grouped]);
    assert!(groups.uncut[0].1.contains("4 groups"), "{}", groups.uncut[0].1);

    // All-ones masks give the original exactly.
    assert_eq!(decode(&model, &groups.keep_all()).unwrap(), model);

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for keep in [0.3, 0.6] {
        let masks = random_keep_masks(&groups, keep, &mut rng);
        let module = decode(&model, &masks).unwrap();
        // Depthwise layers stay depthwise at the kept width.
        for name in ["dw", "dw2"] {
            let i = module.description.layer_index(name).unwrap();
            let g = groups.layers[i].output.single_group().unwrap();
            let kept = masks[g].iter().filter(|k| **k).count();
            let LayerKind::Conv2d { out_channels, groups: conv_groups, .. } = module.description.layers[i].kind else {
                panic!("{name} is a convolution")
            };
            assert_eq!((out_channels, conv_groups), (kept, kept), "{name}");
        }
        let got = burn_logits(&module, &images, 3);
        let want = naive_logits(desc, &model.weights, &images, 3, &removed_inputs(&model.description, &groups, &masks));
        let err = relative_error(&got, &want);
        assert!(err <= 1e-5, "keep {keep}: decoded vs naive masked original, relative error {err}");
        let reference = zero_removed_inputs(&model, &masks).unwrap();
        let err = relative_error(&got, &burn_logits(&reference, &images, 3));
        assert!(err <= 1e-5, "keep {keep}: decoded vs zeroed-weights original, relative error {err}");
        // MACs: a depthwise kernel reads one channel, a grouped one a quarter.
        let c = count(&module.description).unwrap();
        let dw = &c.layers[module.description.layer_index("dw").unwrap()];
        let k = masks[groups.layers[module.description.layer_index("dw").unwrap()].output.single_group().unwrap()]
            .iter()
            .filter(|k| **k)
            .count();
        assert_eq!(dw.macs, (k * 12 * 12 * 9) as u64);
        assert_eq!(c.layers[grouped].macs, (32 * 12 * 12 * 8 * 9) as u64);
    }
}

#[test]
fn channel_concats_decode_to_the_masked_original() {
    let model = random_model_of(concat_net(), 6);
    let desc = &model.description;
    let images = random_images(3, desc.input, 7);
    let plain = HashMap::new();
    let err = relative_error(&burn_logits(&model, &images, 3), &naive_logits(desc, &model.weights, &images, 3, &plain));
    assert!(err <= 1e-5, "burn vs naive forward: relative error {err}");

    // Every conv's channels are cut: the depthwise conv over the joined channels produces both
    // joined groups, and nothing is left out.
    let groups = ChannelGroups::derive(desc).unwrap();
    let labels: Vec<String> = (0..groups.groups.len()).map(|g| groups.group_label(desc, g)).collect();
    assert_eq!(labels, ["stem+dw", "grow+dw", "mix", "head"]);
    assert!(groups.uncut.is_empty(), "{:?}", groups.uncut);
    assert_eq!(decode(&model, &groups.keep_all()).unwrap(), model, "all-ones masks give the original");

    let [stem, grow, mix, head] = [0, 1, 2, 3];
    let layer = |name: &str| desc.layer_index(name).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for keep in [0.3, 0.6] {
        let masks = random_keep_masks(&groups, keep, &mut rng);
        let module = decode(&model, &masks).unwrap();
        let kept = |g: usize| masks[g].iter().filter(|k| **k).count();

        // The removed input channels of every consumer, by hand from the joins' channel order:
        // [grow, stem] at `mix`, [mix, grow, stem] at `head`, [head, mix, grow, stem] x 25 at `fc`.
        let removed = |order: &[usize]| {
            let mut out = Vec::new();
            let mut offset = 0;
            for &g in order {
                out.extend((0..masks[g].len()).filter(|&c| !masks[g][c]).map(|c| offset + c));
                offset += masks[g].len();
            }
            out
        };
        let by_hand: HashMap<usize, (Vec<usize>, usize)> = [
            (layer("grow"), (removed(&[stem]), 1)),
            (layer("mix"), (removed(&[grow, stem]), 1)),
            (layer("head"), (removed(&[mix, grow, stem]), 1)),
            (layer("fc"), (removed(&[head, mix, grow, stem]), 25)),
        ]
        .into_iter()
        .collect();
        assert_eq!(removed_inputs(desc, &groups, &masks), by_hand, "keep {keep}");

        // The module is smaller where the spans are: the depthwise conv keeps both groups' kept.
        let LayerKind::Conv2d { out_channels, groups: conv_groups, .. } = module.description.layers[layer("dw")].kind
        else {
            panic!("dw is a convolution")
        };
        assert_eq!((out_channels, conv_groups), (kept(grow) + kept(stem), kept(grow) + kept(stem)));

        let got = burn_logits(&module, &images, 3);
        let want = naive_logits(desc, &model.weights, &images, 3, &by_hand);
        let err = relative_error(&got, &want);
        assert!(err <= 1e-5, "keep {keep}: decoded vs naive masked original, relative error {err}");
        let reference = zero_removed_inputs(&model, &masks).unwrap();
        let err = relative_error(&got, &burn_logits(&reference, &images, 3));
        assert!(err <= 1e-5, "keep {keep}: decoded vs zeroed-weights original, relative error {err}");

        // Padding every group to a multiple of 8 through the joins leaves the outputs unchanged.
        let padded = cnnsplitter::decode::pad_channels(&module, 8).unwrap();
        assert!(ChannelGroups::derive(&padded.description).unwrap().groups.iter().all(|g| g.width % 8 == 0));
        let err = relative_error(&burn_logits(&padded, &images, 3), &got);
        assert!(err <= 1e-5, "keep {keep}: padded vs module, relative error {err}");
    }
}

#[test]
fn an_add_of_differently_joined_channels_is_left_out_and_named() {
    // `res` adds [grow, stem] to a plain 14-channel conv: same shape, different spans.
    let mut desc = concat_net();
    let dw = desc.layer_index("dw").unwrap();
    desc.layers[dw].kind = LayerKind::conv(14, 3, 1);
    let groups = ChannelGroups::derive(&desc).unwrap();
    let labels: Vec<String> = (0..groups.groups.len()).map(|g| groups.group_label(&desc, g)).collect();
    assert_eq!(labels, ["mix", "head"], "stem, grow and dw meet at the add: left out");
    let res = desc.layer_index("res").unwrap();
    assert_eq!(groups.uncut.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [res]);
    assert!(groups.uncut[0].1.contains("joined differently"), "{}", groups.uncut[0].1);
    let model = random_model_of(desc, 9);
    let images = random_images(2, model.description.input, 10);
    let masks = random_keep_masks(&groups, 0.5, &mut ChaCha8Rng::seed_from_u64(11));
    let module = decode(&model, &masks).unwrap();
    let want = naive_logits(
        &model.description,
        &model.weights,
        &images,
        2,
        &removed_inputs(&model.description, &groups, &masks),
    );
    let err = relative_error(&burn_logits(&module, &images, 2), &want);
    assert!(err <= 1e-5, "decoded vs naive masked original, relative error {err}");
}

#[test]
fn a_concat_naming_no_earlier_layer_is_refused() {
    let mut bad = concat_net();
    let join = bad.layer_index("join").unwrap();
    bad.layers[join].kind = LayerKind::Concat { from: vec!["nothing".into()] };
    let e = cnnsplitter::model::shape::infer_shapes(&bad).unwrap_err().to_string();
    assert!(e.contains("join") && e.contains("`nothing`, which is not an earlier layer"), "{e}");
}

#[test]
fn a_grouped_convolution_that_does_not_divide_its_channels_is_refused() {
    let mut desc = depthwise_net();
    let i = desc.layer_index("grouped").unwrap();
    if let LayerKind::Conv2d { groups, .. } = &mut desc.layers[i].kind {
        *groups = 5;
    }
    let err = cnnsplitter::model::shape::infer_shapes(&desc).unwrap_err().to_string();
    assert!(err.contains("grouped") && err.contains("groups = 5 must divide"), "{err}");
}
