//! `cnnsplitter data`: fetch the published datasets, and describe datasets and presets.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use cnnsplitter::data::fetch::{self, Remote};
use cnnsplitter::data::mix::SplitLimits;
use cnnsplitter::data::presets::{DataSelection, PRESETS, preset_or_file};
use cnnsplitter::data::{self as data_lib, ImageSet};

use super::progress_bar::Bars;

/// How every command that takes data selects it.
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset: a preset (synthetic, synthetic-s, synthetic-w, cifar10, cifar100, cifar10-w, svhn,
    /// svhn-s, svhn-w, mnist, mnist-s, mnist-w; see `data presets`) or a path to a .toml mix.
    #[arg(long, default_value = "synthetic")]
    pub dataset: String,
    /// Target class for the weak-model mixes (-w presets), e.g. --tc 3.
    #[arg(long, value_name = "K")]
    pub tc: Option<usize>,
    /// Folder holding the source datasets (default: $CNNSPLITTER_DATA_DIR, else ./data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl DataArgs {
    /// The dataset's file, when `--dataset` names one (a .toml mix): an input the output must
    /// stay apart from.
    pub fn dataset_file(&self) -> Option<&std::path::Path> {
        dataset_file(&self.dataset)
    }

    /// The library's selection.
    pub fn selection(&self) -> DataSelection {
        DataSelection {
            dataset: self.dataset.clone(),
            tc: self.tc,
            data_dir: self.data_dir.clone(),
            limits: self.limits.limits(),
        }
    }
}

/// Caps on the images per class of the training and validation splits (a weak user's scarce
/// data); they override the mix's own `[limit]`.
#[derive(Args, Clone, Debug, Default)]
pub struct LimitArgs {
    /// Keep at most N training images of every class (a seeded random subset).
    #[arg(long, value_name = "N")]
    pub train_per_class: Option<usize>,
    /// Keep at most N training images of the target class (default: --train-per-class).
    #[arg(long, value_name = "N")]
    pub tc_train_images: Option<usize>,
    /// Keep at most N validation images of every class.
    #[arg(long, value_name = "N")]
    pub val_per_class: Option<usize>,
    /// Keep at most N validation images of the target class (default: --val-per-class).
    #[arg(long, value_name = "N")]
    pub tc_val_images: Option<usize>,
}

impl LimitArgs {
    /// The library's limits.
    pub fn limits(&self) -> SplitLimits {
        SplitLimits::new(self.train_per_class, self.tc_train_images, self.val_per_class, self.tc_val_images)
    }
}

#[derive(Args)]
pub struct DataCommand {
    #[command(subcommand)]
    action: DataAction,
}

#[derive(Subcommand)]
enum DataAction {
    /// Download a published dataset (official address, published MD5), unpack it, and skip or
    /// resume what is already there.
    Fetch {
        /// cifar10, cifar100, svhn or mnist.
        dataset: String,
        /// Folder to store it in (later: --data-dir).
        #[arg(long, default_value = "data")]
        dir: PathBuf,
        /// For CIFAR: the python-pickle version instead of the binary one.
        #[arg(long)]
        python: bool,
        /// Fetch from this address instead of the official one (a mirror); also $CNNSPLITTER_DATA_URL.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// The format found in a folder and its images per split and class, or (with --dataset)
    /// the train / validation / test splits of a preset or mix.
    Info {
        /// A folder holding a dataset in one of the published formats.
        dir: Option<PathBuf>,
        #[command(flatten)]
        data: OptionalDataArgs,
        /// Print one JSON object (format, splits with count and per_class).
        #[arg(long)]
        json: bool,
    },
    /// List the presets with what each holds.
    Presets,
}

/// Like [`DataArgs`], but without a default dataset (for `data info`).
#[derive(Args)]
struct OptionalDataArgs {
    /// A preset or a .toml mix (see `data presets`).
    #[arg(long)]
    dataset: Option<String>,
    /// Target class for the -w presets.
    #[arg(long, value_name = "K")]
    tc: Option<usize>,
    /// Folder holding the source datasets (default: $CNNSPLITTER_DATA_DIR, else ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd.action {
        DataAction::Fetch { dataset, dir, python, base_url } => {
            let mut remote: Remote = fetch::official(&dataset, python)?;
            if let Some(url) = base_url {
                remote.base_url = url;
            }
            for o in fetch::fetch(&remote, &dir, &Bars::default())? {
                println!(
                    "{:<32} {}{}",
                    o.name,
                    o.action,
                    if o.bytes > 0 { format!(" ({} bytes)", o.bytes) } else { String::new() }
                );
            }
            println!("{dataset} is in {}; use --data-dir {}", dir.display(), dir.display());
        }
        DataAction::Info { dir, data, json } => match (dir, data.dataset) {
            (Some(dir), None) => {
                let raw = data_lib::open(&dir)?;
                let classes = raw.classes();
                let splits: Vec<(&str, &ImageSet)> = raw.splits.iter().map(|(n, s)| (n.as_str(), s)).collect();
                print_info(
                    json,
                    json!({"format": raw.format, "dir": raw.dir, "dataset": raw.format.dataset()}),
                    &raw.class_names,
                    &splits,
                    classes,
                )?;
            }
            (None, Some(dataset)) => {
                let selection =
                    DataSelection { dataset, tc: data.tc, data_dir: data.data_dir, limits: data.limits.limits() };
                let spec = selection.spec()?;
                let d = selection.load()?;
                let splits = [("train", &*d.train), ("val", &*d.val), ("test", &*d.test)];
                print_info(
                    json,
                    json!({"format": "mix", "dataset": d.name, "description": spec.description,
                           "digits": d.digits, "normalization": d.normalization}),
                    &d.class_names,
                    &splits,
                    d.classes(),
                )?;
            }
            _ => bail!("give either a folder (data info DIR) or --dataset NAME, not both"),
        },
        DataAction::Presets => {
            for (name, _) in PRESETS {
                let spec = preset_or_file(name)?;
                let tc = if spec.needs_tc() { " --tc K" } else { "" };
                println!("{:<28} {}", format!("{name}{tc}"), spec.description);
            }
        }
    }
    Ok(())
}

fn print_info(
    json: bool,
    mut head: serde_json::Value,
    class_names: &[String],
    splits: &[(&str, &ImageSet)],
    classes: usize,
) -> Result<()> {
    let shape = splits.first().map(|(_, s)| s.shape).unwrap_or_default();
    if json {
        let mut split_json = serde_json::Map::new();
        for (name, set) in splits {
            split_json.insert(name.to_string(), json!({"count": set.len(), "per_class": set.per_class(classes)}));
        }
        head["classes"] = json!(class_names);
        head["shape"] = json!(shape);
        head["splits"] = serde_json::Value::Object(split_json);
        println!("{}", serde_json::to_string_pretty(&head)?);
        return Ok(());
    }
    let label = head["dataset"].as_str().unwrap_or_default();
    let format = head["format"].as_str().unwrap_or_default();
    let [c, h, w] = shape;
    println!("{label}: {format}, {classes} classes, images {c}x{h}x{w}");
    if let Some(d) = head["description"].as_str() {
        println!("{d}");
    }
    let width = class_names.iter().enumerate().map(|(k, n)| format!("{k} {n}").len()).max().unwrap_or(5).clamp(5, 24);
    print!("{:<width$}", "class");
    for (name, _) in splits {
        print!(" {name:>8}");
    }
    println!();
    for (k, class) in class_names.iter().enumerate() {
        print!("{:<width$}", format!("{k} {class}").chars().take(width).collect::<String>());
        for (_, set) in splits {
            print!(" {:>8}", set.per_class(classes)[k]);
        }
        println!();
    }
    print!("{:<width$}", "total");
    for (_, set) in splits {
        print!(" {:>8}", set.len());
    }
    println!();
    Ok(())
}

/// `dataset` as a file path, when it names an existing file (a .toml mix) rather than a preset.
pub fn dataset_file(dataset: &str) -> Option<&std::path::Path> {
    Some(std::path::Path::new(dataset)).filter(|p| p.is_file())
}
