//! Kernel importance per class (paper section 3.1): for the training images of class n that the model
//! classifies with probability ≥ 0.9, the sum of each kernel's post-ReLU feature map (before
//! pooling), averaged over those images.
//!
//! Importance is computed per channel group, on one representative tensor: the output of the
//! group's last residual add (so paired layers get one order, as the paper's ResCNN does), else the
//! first ReLU after the producing convolution, else the convolution's output.

use std::path::Path;

use burn::module::Module;

use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::compute::Compute;
use crate::data::ImageSet;
use crate::data::pipeline::Normalization;
use crate::error::{Error, Result};
use crate::graph::channel_groups::ChannelGroups;
use crate::model::Model;
use crate::model::description::LayerKind;
use crate::model::net::{Activation, Net, images_tensor, to_host_2d};
use crate::progress::Progress;

/// Importance of every kernel of every channel group, per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Importance {
    /// Probability a training image needs for its class to count.
    pub confidence: f64,
    /// Images used per class.
    pub samples_per_class: Vec<usize>,
    /// Classes with no image at the confidence level: their importance comes from the images the
    /// model classifies right (or, failing that, all their images).
    pub fallback_classes: Vec<usize>,
    /// Per channel group.
    pub groups: Vec<GroupImportance>,
}

/// Importance within one channel group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupImportance {
    /// The producing layers, e.g. `conv_1+conv_3`.
    pub layers: String,
    /// The layer whose output was measured.
    pub measured_at: String,
    /// `per_class[n][c]`: mean activation sum of channel c over class n's images.
    pub per_class: Vec<Vec<f64>>,
}

impl Importance {
    /// Channels of group `g` for class `n`, most important first (ties: lower index first).
    pub fn order(&self, g: usize, n: usize) -> Vec<usize> {
        let values = &self.groups[g].per_class[n];
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        order
    }

    /// Checks that the table fits `groups` of a model with `classes` classes (one entry per
    /// group, class and channel, all finite): a table from another model is refused.
    pub fn check(&self, groups: &ChannelGroups, classes: usize) -> std::result::Result<(), String> {
        if self.groups.len() != groups.groups.len() {
            return Err(format!(
                "has {} channel groups, but the model has {}: it belongs to another model",
                self.groups.len(),
                groups.groups.len()
            ));
        }
        for (g, (table, group)) in self.groups.iter().zip(&groups.groups).enumerate() {
            if table.per_class.len() != classes
                || table.per_class.iter().any(|row| row.len() != group.width || row.iter().any(|v| !v.is_finite()))
            {
                return Err(format!(
                    "group {g} does not hold {classes} classes x {} finite values: it belongs to another model",
                    group.width
                ));
            }
        }
        Ok(())
    }

    /// Reads `importance.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::file(path, format!("is not an importance file: {e}")))
    }
}

/// The layer whose output stands for each channel group (see the module docs).
pub fn representative_layers(model: &Model, groups: &ChannelGroups) -> Vec<usize> {
    let desc = &model.description;
    groups
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| {
            let in_group = |i: usize| groups.layers[i].output.single_group() == Some(g);
            let last_add = (0..desc.layers.len())
                .rev()
                .find(|&i| in_group(i) && matches!(desc.layers[i].kind, LayerKind::Add { .. }));
            if let Some(add) = last_add {
                // A ReLU right after the add measures the same channels after the activation.
                return match desc.layers.get(add + 1) {
                    Some(l)
                        if matches!(l.kind, LayerKind::Relu | LayerKind::Relu6)
                            && in_group(add + 1)
                            && l.input.is_none() =>
                    {
                        add + 1
                    }
                    _ => add,
                };
            }
            let producer = group.producers[0];
            (producer + 1..desc.layers.len())
                .take_while(|&i| {
                    in_group(i)
                        && !matches!(
                            desc.layers[i].kind,
                            LayerKind::MaxPool2d { .. } | LayerKind::AvgPool2d { .. } | LayerKind::GlobalAvgPool
                        )
                })
                .find(|&i| matches!(desc.layers[i].kind, LayerKind::Relu | LayerKind::Relu6))
                .unwrap_or(producer)
        })
        .collect()
}

/// Computes the importance of every kernel of `model` on the training images `train`.
pub fn compute(
    model: &Model,
    train: &ImageSet,
    normalization: &Normalization,
    confidence: f64,
    compute: &Compute,
    progress: &dyn Progress,
) -> Result<Importance> {
    let desc = &model.description;
    let classes = desc.classes;
    let groups = ChannelGroups::derive(desc)?;
    let measured = representative_layers(model, &groups);
    let device = compute.device();
    let net = Net::new(model, device)?.valid();
    let [c, h, w] = desc.input;
    let per = c * h * w;
    // Sums over images that are confident, classified right, or any, per group, class, channel.
    let tiers = 3;
    let mut sums: Vec<Vec<Vec<Vec<f64>>>> =
        (0..tiers).map(|_| groups.groups.iter().map(|g| vec![vec![0.0; g.width]; classes]).collect()).collect();
    let mut counts = vec![vec![0usize; classes]; tiers];
    let batch = 256;
    progress.start("kernel importance", train.len().div_ceil(batch) as u64);
    for start in (0..train.len()).step_by(batch) {
        let m = batch.min(train.len() - start);
        let mut images = vec![0f32; m * per];
        for k in 0..m {
            normalization.apply(train.image(start + k), &mut images[k * per..(k + 1) * per]);
        }
        let x = images_tensor(&images, [m, c, h, w], device)?;
        let mut activations: Vec<Option<Vec<f32>>> = vec![None; groups.groups.len()];
        let logits = net.forward_observed(x, |layer, act| {
            for (g, &l) in measured.iter().enumerate() {
                if l == layer
                    && let Activation::Map(t) = act
                {
                    let [b, ch, _, _] = t.dims();
                    let summed = t.clone().sum_dim(3).sum_dim(2).reshape([b, ch]);
                    activations[g] = Some(to_host_2d(summed));
                }
            }
        });
        let probs = to_host_2d(softmax(logits, 1));
        for k in 0..m {
            let label = train.labels[start + k] as usize;
            let row = &probs[k * classes..(k + 1) * classes];
            let right = (0..classes).all(|j| row[j] <= row[label]);
            let confident = row[label] as f64 >= confidence;
            for (tier, applies) in [confident, right, true].into_iter().enumerate() {
                if !applies {
                    continue;
                }
                counts[tier][label] += 1;
                for (g, act) in activations.iter().enumerate() {
                    let act = act.as_ref().expect("every measured layer runs");
                    let width = groups.groups[g].width;
                    for (s, v) in sums[tier][g][label].iter_mut().zip(&act[k * width..(k + 1) * width]) {
                        *s += *v as f64;
                    }
                }
            }
        }
        progress.advance(1);
    }
    progress.finish();
    // Per class, the first tier with images.
    let tier_of: Vec<usize> =
        (0..classes).map(|n| (0..tiers).find(|&t| counts[t][n] > 0).unwrap_or(tiers - 1)).collect();
    if let Some(n) = (0..classes).find(|&n| counts[tiers - 1][n] == 0) {
        return Err(Error::Invalid(format!(
            "the training split has no image of class {n}: kernel importance needs some"
        )));
    }
    Ok(Importance {
        confidence,
        samples_per_class: (0..classes).map(|n| counts[tier_of[n]][n]).collect(),
        fallback_classes: (0..classes).filter(|&n| tier_of[n] > 0).collect(),
        groups: groups
            .groups
            .iter()
            .enumerate()
            .map(|(g, _)| GroupImportance {
                layers: groups.group_label(desc, g),
                measured_at: desc.layers[measured[g]].name.clone(),
                per_class: (0..classes)
                    .map(|n| {
                        let t = tier_of[n];
                        sums[t][g][n].iter().map(|v| v / counts[t][n] as f64).collect()
                    })
                    .collect(),
            })
            .collect(),
    })
}
