//! `cnnsplitter inspect`: layers, kernels, parameters and MACs of an architecture or model folder.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use cnnsplitter::folders::Artifact;
use cnnsplitter::graph::channel_groups::ChannelGroups;
use cnnsplitter::model::count::count;
use cnnsplitter::model::description::ModelDescription;
use cnnsplitter::model::{DESCRIPTION_FILE, zoo};

#[derive(Args)]
pub struct InspectArgs {
    /// An architecture name (e.g. simcnn@0.25) or a model folder (holding model.json).
    target: String,
    /// Input image shape CxHxW (for an architecture name).
    #[arg(long, default_value = "3x32x32", value_parser = super::parse_shape)]
    input: [usize; 3],
    /// Number of classes (for an architecture name).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Print one JSON object (kernels, params, macs, layers, channel_groups) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let path = Path::new(&args.target);
    let desc = if path.is_dir() {
        // A model folder: check the weights too, so a broken folder is reported here.
        Artifact::open(path)?.load_model()?.description
    } else if path.is_file() && path.file_name().is_some_and(|n| n == DESCRIPTION_FILE) {
        ModelDescription::load(path)?
    } else {
        zoo::build(&args.target, args.input, args.classes)?
    };
    let c = count(&desc)?;
    let groups = ChannelGroups::derive(&desc)?;
    let group_rows: Vec<serde_json::Value> = groups
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| serde_json::json!({"layers": groups.group_label(&desc, g), "kernels": group.width}))
        .collect();
    if args.json {
        let mut value = serde_json::to_value(&c)?;
        value["channel_groups"] = serde_json::Value::Array(group_rows);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let [ch, h, w] = c.input;
    println!("{}  input {ch}x{h}x{w}  {} classes", c.model, c.classes);
    println!("{:<24} {:<16} {:>12} {:>8} {:>12} {:>14}", "layer", "type", "output", "kernels", "params", "MACs");
    for l in &c.layers {
        let kernels = if l.kernels > 0 { l.kernels.to_string() } else { String::new() };
        let params = if l.params > 0 { thousands(l.params as u64) } else { String::new() };
        let macs = if l.macs > 0 { thousands(l.macs) } else { String::new() };
        println!("{:<24} {:<16} {:>12} {:>8} {:>12} {:>14}", l.name, l.kind, l.output, kernels, params, macs);
    }
    println!(
        "{:<24} {:<16} {:>12} {:>8} {:>12} {:>14}",
        "total",
        "",
        "",
        c.kernels,
        thousands(c.params as u64),
        thousands(c.macs)
    );
    println!("{} channel groups that kernel removal can cut:", groups.groups.len());
    for (g, group) in groups.groups.iter().enumerate() {
        println!("  group {g:>2}: {} ({} kernels)", groups.group_label(&desc, g), group.width);
    }
    Ok(())
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
