//! Mutation test: thousands of mutated model folders, configs and run-folder files through the
//! library's loaders; none may panic (errors are fine). Dataset files have their own fuzz test
//! in tests/data_readers.rs. `CNNSPLITTER_FUZZ_ROUNDS` multiplies the rounds.

mod common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cnnsplitter::Model;
use cnnsplitter::data::mix::MixSpec;
use cnnsplitter::experiment::config::ExperimentConfig;
use cnnsplitter::model::description::ModelDescription;
use cnnsplitter::model::weights::Weights;
use cnnsplitter::modularize::ModularizeConfig;
use cnnsplitter::train::config::TrainConfig;

const TINY: &str = include_str!("../experiments/demo-tiny.toml");
const MIX: &str = include_str!("../src/data/presets/synthetic-w-tiny.toml");

/// Values that break naive size arithmetic.
const NASTY: [&str; 12] = [
    "0",
    "1",
    "-1",
    "2",
    "65537",
    "4611686018427387904",
    "9223372036854775807",
    "1e300",
    "-1e300",
    "nan",
    "0.5",
    "\"x\"",
];

/// `text` with one to three numbers replaced by nasty values (JSON or TOML alike).
fn mutate_numbers(text: &str, rng: &mut ChaCha8Rng) -> String {
    let spans: Vec<(usize, usize)> = {
        let bytes = text.as_bytes();
        let mut spans = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'_') {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'e') {
                    i += 1;
                }
                spans.push((start, i));
            } else {
                i += 1;
            }
        }
        spans
    };
    let mut out = text.to_string();
    let mut chosen: Vec<(usize, usize)> =
        (0..rng.random_range(1..=3)).map(|_| spans[rng.random_range(0..spans.len())]).collect();
    chosen.sort();
    chosen.dedup();
    for &(start, end) in chosen.iter().rev() {
        out.replace_range(start..end, NASTY[rng.random_range(0..NASTY.len())]);
    }
    out
}

/// `bytes` with one to eight bytes set at random.
fn mutate_bytes(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut m = bytes.to_vec();
    for _ in 0..rng.random_range(1..8) {
        let i = rng.random_range(0..m.len());
        m[i] = rng.random();
    }
    m
}

#[test]
fn mutated_models_configs_and_run_files_never_panic() {
    let rounds: usize = std::env::var("CNNSPLITTER_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let model = common::random_model("resnet8-bn@0.25", [3, 16, 16], 4, 1);
    let json = model.description.to_json();
    let weights = model.weights.to_safetensors().unwrap();
    let data = cnnsplitter::data::presets::DataSelection::named("synthetic");
    let modularize = serde_json::to_string_pretty(&ModularizeConfig::new(
        "m".into(),
        data.clone(),
        cnnsplitter::modularize::genetic::ga::Preset::ReferenceCode,
        0,
    ))
    .unwrap();
    let train = serde_json::to_string_pretty(
        &TrainConfig::new("simcnn@0.25", cnnsplitter::train::config::Recipe::Strong, &data, &Default::default(), 0, 2)
            .unwrap(),
    )
    .unwrap();
    let origin = std::path::Path::new("mutated.toml");
    let mut tried = 0;
    for _ in 0..1000 * rounds {
        // A model folder: description numbers, weight bytes, or both.
        let text = mutate_numbers(&json, &mut rng);
        let bytes = if rng.random::<bool>() { mutate_bytes(&weights, &mut rng) } else { weights.clone() };
        if let (Ok(desc), Ok(w)) = (ModelDescription::from_json(&text), Weights::from_safetensors(&bytes)) {
            let _ = Model::new(desc, w);
        }
        let _ = Weights::from_safetensors(&mutate_bytes(&weights, &mut rng))
            .map(|w| Model::new(model.description.clone(), w));
        // Configs the tool reads: experiment and mix TOML, a run's config.json.
        let _ = ExperimentConfig::from_toml(&mutate_numbers(TINY, &mut rng), origin);
        let mix = if rng.random::<bool>() { MIX.replacen("[[part]]", "pad = 2\n[[part]]", 1) } else { MIX.to_string() };
        let _ = MixSpec::from_toml(&mutate_numbers(&mix, &mut rng)).map(|m| m.outline(Some(rng.random_range(0..20))));
        let _ = serde_json::from_str::<ModularizeConfig>(&mutate_numbers(&modularize, &mut rng)).map(|c| c.validate());
        let _ = serde_json::from_str::<TrainConfig>(&mutate_numbers(&train, &mut rng)).map(|c| c.validate());
        tried += 7;
    }
    eprintln!("mutation test: {tried} mutated inputs, no panic");
    assert!(tried >= 7000);
}

/// The hostile files of the issue: each is an error, not a panic or an abort.
#[test]
fn hostile_files_are_errors() {
    use cnnsplitter::data::mat5::{MatArray, MatData};
    // An SVHN `X` with a zero dimension.
    let arrays = vec![
        MatArray { name: "X".into(), dims: vec![32, 0, 3, 2], data: MatData::U8(Vec::new()) },
        MatArray { name: "y".into(), dims: vec![2, 1], data: MatData::F64(vec![1.0, 2.0]) },
    ];
    let err = cnnsplitter::data::svhn::images_from_arrays(&arrays, std::path::Path::new("x.mat")).unwrap_err();
    assert!(err.to_string().contains("none 0"), "{err}");

    // Paddings and inputs near 2^62.
    let model = common::random_model("simcnn-weak@0.125", [3, 32, 32], 3, 1);
    let json = model.description.to_json();
    let huge_input =
        json.replacen("\"input\": [\n    3,\n    32,\n    32\n  ]", "\"input\": [3, 4611686018427387904, 32]", 1);
    assert_ne!(huge_input, json, "the input was replaced");
    assert!(ModelDescription::from_json(&huge_input).unwrap_err().to_string().contains("1..=65536"));
    let huge_padding =
        json.replacen("\"padding\": [\n        1,\n        1\n      ]", "\"padding\": [4611686018427387904, 1]", 1);
    assert_ne!(huge_padding, json, "a padding was replaced");
    assert!(ModelDescription::from_json(&huge_padding).unwrap_err().to_string().contains("larger than 65536"));

    // A pickle whose memo references double at every level: 2^40 leaves from a few hundred bytes.
    let mut bomb = vec![0x80, 2, b'N'];
    for level in 0..40u8 {
        bomb.extend([b'q', level, b'h', level, b'h', level, 0x86]); // memoize, push twice, tuple of two
    }
    bomb.push(b'.');
    let err = cnnsplitter::data::pickle::load(&bomb).unwrap_err().to_string();
    assert!(err.contains("too many"), "{err}");

    // A synthetic source of a billion images.
    let mix =
        "name = \"big\"\n[synthetic]\ntrain = 1000000000\n[[part]]\nsource = \"synthetic\"\n[split]\nmode = \"pool\"\n";
    let err = MixSpec::from_toml(mix).unwrap().build(std::path::Path::new("."), None, Default::default()).unwrap_err();
    assert!(err.to_string().contains("GiB of memory available"), "{err}");
}
