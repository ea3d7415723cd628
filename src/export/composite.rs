//! ONNX graphs of composites: the composed model (N modules, each keeping its own-class logit),
//! and the pieces other composites build on (the patched model's graph is in
//! [`crate::patch::export`]). Input `input` `[batch, C, H, W]`, output `logits`
//! `[batch, classes]`, as for a single model.

use crate::error::{Error, Result};
use crate::export::onnx::{Attr, GraphBuilder, INPUT, OUTPUT, add_model};
use crate::model::Model;

/// A graph with the input `input` `[batch, C, H, W]`.
pub fn start(input: [usize; 3]) -> GraphBuilder {
    let mut g = GraphBuilder::default();
    let [c, h, w] = input;
    g.graph.input.push(GraphBuilder::value_info(INPUT, &[None, Some(c), Some(h), Some(w)]));
    g
}

/// Adds `Gather(axis 1)` of column `column` of `tensor`: `[batch, 1]`.
pub fn column(g: &mut GraphBuilder, tensor: &str, column: usize, name: &str) -> String {
    let index = format!("{name}/index");
    g.initializer_i64(&index, &[1], &[column as i64]);
    let out = format!("{name}/column");
    g.node(&format!("{name}/gather"), "Gather", &[tensor, &index], &[&out], vec![("axis", Attr::Int(1))]);
    out
}

/// The composed model of `modules` (module `n` recognises class `n`): output column `n` is
/// module `n`'s logit `n`.
pub fn to_onnx_composed(modules: &[Model]) -> Result<Vec<u8>> {
    let first = modules.first().ok_or_else(|| Error::Invalid("no modules to compose".into()))?;
    let n = modules.len();
    let mut g = start(first.description.input);
    let mut columns = Vec::with_capacity(n);
    for (c, m) in modules.iter().enumerate() {
        if m.description.input != first.description.input || m.description.classes != n {
            return Err(Error::Invalid(format!(
                "module {c} (`{}`) does not fit: every module must take the same input and have {n} outputs",
                m.description.name
            )));
        }
        let logits = add_model(&mut g, m, INPUT, &format!("module{c}/"))?;
        columns.push(column(&mut g, &logits, c, &format!("module{c}")));
    }
    let refs: Vec<&str> = columns.iter().map(String::as_str).collect();
    g.node("compose", "Concat", &refs, &[OUTPUT], vec![("axis", Attr::Int(1))]);
    g.graph.output.push(GraphBuilder::value_info(OUTPUT, &[None, Some(n)]));
    g.finish("composed")
}
