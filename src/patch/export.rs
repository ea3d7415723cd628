//! The patched model as one ONNX graph (input `input` `[batch, C, H, W]`, output `logits`
//! `[batch, classes]`: the patched scores, whose argmax is the prediction).

use crate::error::Result;
use crate::export::composite::{column, start};
use crate::export::onnx::{Attr, GraphBuilder, INPUT, OUTPUT, add_model};
use crate::patch::{PatchedModel, Rule};

/// The patched model. Applied: `softmax(weak) · (1 − onehot) + score · onehot` with `onehot`
/// the TC's column and `score` the rule's TC score: `(module[tc_strong] − min) / range` (paper),
/// or `σ(z) ± 2` with `z = w · [max(log_softmax(weak), floor), module[tc_strong]] + b` and `+ 2`
/// where `z >= threshold` (calibrated). Not applied (closed gate): the weak model's logits.
pub fn to_onnx_patched(p: &PatchedModel) -> Result<Vec<u8>> {
    let classes = p.weak.description.classes;
    let spec = &p.spec;
    let mut g = start(p.weak.description.input);
    let weak = add_model(&mut g, &p.weak, INPUT, "weak/")?;
    if !spec.applied {
        g.node("weak/identity", "Identity", &[&weak], &[OUTPUT], vec![]);
        g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(classes)]));
        return g.finish("patched (gate closed: the weak model)");
    }
    g.node("weak/softmax", "Softmax", &[&weak], &["probabilities"], vec![("axis", Attr::Int(1))]);
    let module = add_model(&mut g, &p.module, INPUT, "module/")?;
    let tc = column(&mut g, &module, spec.tc_strong, "module");
    match &spec.rule {
        Rule::Paper(c) => {
            g.initializer("calibration/min", &[1], &[c.min]);
            g.initializer("calibration/range", &[1], &[c.range()]);
            g.node("score/sub", "Sub", &[&tc, "calibration/min"], &["score/shifted"], vec![]);
            g.node("score/div", "Div", &["score/shifted", "calibration/range"], &["score"], vec![]);
        }
        Rule::Calibrated(r) => {
            let d = r.weights.len();
            g.node("weak/log_softmax", "LogSoftmax", &[&weak], &["log_probabilities"], vec![("axis", Attr::Int(1))]);
            g.initializer("rule/floor", &[1], &[r.log_prob_floor]);
            g.node("rule/floored", "Max", &["log_probabilities", "rule/floor"], &["rule/weak_features"], vec![]);
            g.node(
                "rule/concat",
                "Concat",
                &["rule/weak_features", &tc],
                &["rule/features"],
                vec![("axis", Attr::Int(1))],
            );
            let weights: Vec<f32> = r.weights.iter().map(|&w| w as f32).collect();
            g.initializer("rule/weights", &[d, 1], &weights);
            g.initializer("rule/bias", &[1], &[r.bias as f32]);
            g.initializer("rule/threshold", &[1], &[r.threshold as f32]);
            g.initializer("rule/above", &[1], &[2.0]);
            g.initializer("rule/below", &[1], &[-2.0]);
            g.node("rule/matmul", "MatMul", &["rule/features", "rule/weights"], &["rule/wx"], vec![]);
            g.node("rule/add", "Add", &["rule/wx", "rule/bias"], &["rule/z"], vec![]);
            g.node("rule/sigmoid", "Sigmoid", &["rule/z"], &["rule/q"], vec![]);
            g.node("rule/decide", "GreaterOrEqual", &["rule/z", "rule/threshold"], &["rule/is_tc"], vec![]);
            g.node("rule/offset", "Where", &["rule/is_tc", "rule/above", "rule/below"], &["rule/offset"], vec![]);
            g.node("rule/score", "Add", &["rule/q", "rule/offset"], &["score"], vec![]);
        }
    }
    let mut onehot = vec![0.0f32; classes];
    onehot[spec.tc_weak] = 1.0;
    let keep: Vec<f32> = onehot.iter().map(|v| 1.0 - v).collect();
    g.initializer("patch/keep", &[1, classes], &keep);
    g.initializer("patch/onehot", &[1, classes], &onehot);
    g.node("patch/kept", "Mul", &["probabilities", "patch/keep"], &["patch/kept"], vec![]);
    g.node("patch/placed", "Mul", &["score", "patch/onehot"], &["patch/placed"], vec![]);
    g.node("patch/add", "Add", &["patch/kept", "patch/placed"], &[OUTPUT], vec![]);
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(classes)]));
    g.finish("patched")
}
