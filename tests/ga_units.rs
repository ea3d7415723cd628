//! Units of the search that were only tested end to end: the genome layout (grouping), the
//! sensitivity initialisation, the next population, and the fitness weights.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cnnsplitter::graph::channel_groups::ChannelGroups;
use cnnsplitter::model::description::ModelDescription;
use cnnsplitter::model::zoo;
use cnnsplitter::modularize::bitset::Bits;
use cnnsplitter::modularize::genetic::ga::{
    FitnessRule, GaConfig, InitKind, Mutation, Preset, initial_population, next_population,
};
use cnnsplitter::modularize::genetic::grouping::{GroupingConfig, GroupingKind, Layout};
use cnnsplitter::modularize::importance::{GroupImportance, Importance};

/// Random importance values for every channel group of `desc`.
fn random_importance(desc: &ModelDescription, seed: u64) -> Importance {
    let groups = ChannelGroups::derive(desc).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Importance {
        confidence: 0.9,
        samples_per_class: vec![1; desc.classes],
        fallback_classes: Vec::new(),
        groups: groups
            .groups
            .iter()
            .map(|g| GroupImportance {
                layers: String::new(),
                measured_at: String::new(),
                per_class: (0..desc.classes).map(|_| (0..g.width).map(|_| rng.random::<f64>()).collect()).collect(),
            })
            .collect(),
    }
}

fn layout(arch: &str, kind: GroupingKind) -> (ModelDescription, Importance, Layout) {
    let desc = zoo::build(arch, [3, 32, 32], 10).unwrap();
    let importance = random_importance(&desc, 1);
    let config = GroupingConfig { kind, ..GroupingConfig::default() };
    let layout = Layout::new(&desc, &importance, &config);
    (desc, importance, layout)
}

#[test]
fn the_genome_has_10_groups_below_256_kernels_and_100_above() {
    // SimCNN: 64, 64, 128, 128 -> 10 groups each; 256 x3 and 512 x6 -> 100 each.
    assert_eq!(layout("simcnn", GroupingKind::Importance).2.bits, 4 * 10 + 9 * 100);
    // ResCNN: 9 segments (pairs share one), widths 64, 128, 128 below the threshold.
    assert_eq!(layout("rescnn", GroupingKind::Importance).2.bits, 3 * 10 + 6 * 100);
    // Without grouping: one bit per kernel of each segment.
    let (_, _, none) = layout("rescnn", GroupingKind::None);
    assert_eq!(none.bits, none.segments.iter().map(|s| s.width).sum::<usize>());
    for kind in [GroupingKind::Importance, GroupingKind::Random, GroupingKind::None] {
        let (_, _, l) = layout("simcnn@0.5", kind);
        let mut offset = 0;
        for s in &l.segments {
            assert_eq!(s.offset, offset);
            offset += s.groups;
            // Groups tile 0..width, contiguous, sizes differing by at most one.
            let sizes: Vec<usize> = (0..s.groups).map(|j| s.bounds(j).len()).collect();
            assert_eq!((0..s.groups).map(|j| s.bounds(j)).next().unwrap().start, 0);
            assert!((1..s.groups).all(|j| s.bounds(j).start == s.bounds(j - 1).end));
            assert_eq!(s.bounds(s.groups - 1).end, s.width);
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
            for order in &s.order {
                let mut sorted = order.clone();
                sorted.sort();
                assert_eq!(sorted, (0..s.width).collect::<Vec<_>>(), "every kernel once");
            }
        }
        assert_eq!(offset, l.bits);
    }
}

#[test]
fn importance_grouping_puts_each_classes_most_important_kernels_in_group_zero() {
    let (_, importance, l) = layout("rescnn@0.25", GroupingKind::Importance);
    for (g, s) in l.segments.iter().enumerate() {
        for n in [0, 7] {
            // A naive ranking of the class's importance values.
            let values = &importance.groups[g].per_class[n];
            let mut ranked: Vec<(f64, usize)> = values.iter().copied().zip(0..).collect();
            ranked.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
            let first: std::collections::BTreeSet<usize> = ranked[..s.bounds(0).len()].iter().map(|r| r.1).collect();
            let group_0: std::collections::BTreeSet<usize> = s.order[n][s.bounds(0)].iter().copied().collect();
            assert_eq!(first, group_0, "segment {g}, class {n}");
        }
    }
}

#[test]
fn sensitivity_initialisation_drops_within_its_ranges_and_keeps_important_groups_more_often() {
    let (_, _, l) = layout("simcnn", GroupingKind::Importance);
    let sensitive: Vec<bool> = (0..l.segments.len()).map(|s| s % 2 == 0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let population = initial_population(&l, &sensitive, InitKind::Sensitivity, 200, &mut rng);
    let mut first = vec![0usize; l.segments.len()];
    let mut last = vec![0usize; l.segments.len()];
    for g in &population {
        for (s, seg) in l.segments.iter().enumerate() {
            let kept = (0..seg.groups).filter(|&j| g.get(seg.offset + j)).count();
            // Sensitive: drop 10-50% of the groups; insensitive: 50-90% (at least one kept).
            let (lo, hi) = if sensitive[s] { (0.5, 0.9) } else { (0.1, 0.5) };
            let bound = |share: f64| (seg.groups as f64 * share).round() as usize;
            assert!(kept >= bound(lo).max(1) && kept <= bound(hi), "segment {s}: {kept} of {}", seg.groups);
            first[s] += usize::from(g.get(seg.offset));
            last[s] += usize::from(g.get(seg.offset + seg.groups - 1));
        }
    }
    // The most important group (rank 0) is kept far more often than the least important one.
    for (s, seg) in l.segments.iter().enumerate().filter(|(_, seg)| seg.groups == 100) {
        assert!(first[s] > last[s] + 100, "segment {s} ({} groups): {} vs {}", seg.groups, first[s], last[s]);
    }
    // Random initialisation: about half of the bits.
    let random = initial_population(&l, &sensitive, InitKind::Random, 50, &mut rng);
    let share = random.iter().map(|g| g.count()).sum::<usize>() as f64 / (50 * l.bits) as f64;
    assert!((0.45..0.55).contains(&share), "{share}");
}

#[test]
fn graded_initialisation_scales_individual_is_drops_by_its_rung() {
    let (_, _, l) = layout("simcnn", GroupingKind::Importance);
    let sensitive: Vec<bool> = (0..l.segments.len()).map(|s| s % 2 == 0).collect();
    let size = 40;
    let population = initial_population(&l, &sensitive, InitKind::Graded, size, &mut ChaCha8Rng::seed_from_u64(6));
    for (i, g) in population.iter().enumerate() {
        // Individual i drops (size − i) / size of a share in [0.1, 0.5] or [0.5, 0.9].
        let strength = (size - i) as f64 / size as f64;
        for (s, seg) in l.segments.iter().enumerate() {
            let kept = (0..seg.groups).filter(|&j| g.get(seg.offset + j)).count();
            let (lo, hi) = if sensitive[s] { (0.1, 0.5) } else { (0.5, 0.9) };
            let keep =
                |drop: f64| ((seg.groups as f64 * (1.0 - drop * strength)).round() as usize).clamp(1, seg.groups);
            assert!(
                kept >= keep(hi) && kept <= keep(lo),
                "individual {i} segment {s}: kept {kept} of {}, expected {}..={}",
                seg.groups,
                keep(hi),
                keep(lo)
            );
        }
    }
    // The first individual drops as the paper's initialisation does; the last keeps nearly all.
    let share = |g: &Bits| g.count() as f64 / l.bits as f64;
    assert!(share(&population[0]) < 0.6, "{}", share(&population[0]));
    assert!(share(&population[size - 1]) > 0.95, "{}", share(&population[size - 1]));
}

fn genome(bits: usize, rng: &mut ChaCha8Rng) -> Bits {
    let mut g = Bits::zeros(bits);
    for i in 0..bits {
        g.set(i, rng.random::<bool>());
    }
    g
}

/// Whether `child` is `a` up to some point and `b` from there on.
fn is_one_point_cross(child: &Bits, a: &Bits, b: &Bits) -> bool {
    (0..=child.len()).any(|cut| (0..child.len()).all(|i| child.get(i) == if i < cut { a.get(i) } else { b.get(i) }))
}

#[test]
fn the_next_population_keeps_the_best_combination_the_elites_and_fills_with_children() {
    for preset in [Preset::ReferenceCode, Preset::Paper] {
        for size in [12, 30] {
            let mut config = GaConfig::preset(preset).with_population(size);
            config.mutation = match config.mutation {
                Mutation::Reset { .. } => Mutation::Reset { share: 0.0 },
                Mutation::Flip { .. } => Mutation::Flip { probability: 0.0 },
            };
            let mut rng = ChaCha8Rng::seed_from_u64(size as u64);
            let population: Vec<Bits> = (0..size).map(|_| genome(64, &mut rng)).collect();
            let fitness: Vec<f64> = (0..size).map(|i| ((i * 7) % size) as f64).collect();
            let keep = population[3].clone();
            let next = next_population(&config, &population, &fitness, &keep, &mut rng);
            assert_eq!(next.len(), size, "{preset:?} {size}");
            assert_eq!(next[0], keep, "the best combination's member comes first");
            // Then the elites: the fittest others, in order.
            let mut ranked: Vec<usize> = (0..size).collect();
            ranked.sort_by(|&a, &b| fitness[b].total_cmp(&fitness[a]));
            let elites: Vec<&Bits> =
                ranked.iter().map(|&i| &population[i]).filter(|g| **g != keep).take(config.elites.max(1) - 1).collect();
            for (k, e) in elites.iter().enumerate() {
                assert_eq!(&next[1 + k], *e, "{preset:?} {size}: elite {k}");
            }
            // The rest are children: one-point crosses of two parents (no mutation here); with
            // truncation selection both parents are among the `parents` fittest.
            let parents: Vec<&Bits> = match preset {
                Preset::ReferenceCode => ranked[..config.parents].iter().map(|&i| &population[i]).collect(),
                Preset::Paper => population.iter().collect(),
            };
            for child in &next[config.elites.max(1)..] {
                let ok = parents.iter().any(|a| parents.iter().any(|b| is_one_point_cross(child, a, b)));
                assert!(ok, "{preset:?} {size}: a child that is no cross of two parents");
            }
        }
    }
}

#[test]
fn the_dynamic_fitness_weight_rises_while_accuracy_is_below_target() {
    let dynamic = FitnessRule::Dynamic { gamma: 0.9, diff_weight: 0.1 };
    assert_eq!(dynamic.weights(None), (0.9, 0.1), "first generation: the base weight");
    let (acc, diff) = dynamic.weights(Some(0.7));
    assert!((acc - 1.1).abs() < 1e-12 && diff == 0.1, "0.9 + (0.9 - 0.7)");
    assert_eq!(dynamic.weights(Some(0.95)), (0.9, 0.1), "no bonus above the target");
    let (acc, diff) = FitnessRule::Fixed { alpha: 0.8 }.weights(Some(0.1));
    assert!((acc - 0.8).abs() < 1e-12 && (diff - 0.2).abs() < 1e-12, "fixed: alpha and 1 - alpha");
}

/// One check of the search's settings: the defaults pass, each out-of-range setting is refused
/// with its name (NaN too), and the CLI and experiment configs use this same check.
#[test]
fn modularize_settings_are_checked_in_one_place_and_errors_name_the_setting() {
    use cnnsplitter::data::presets::DataSelection;
    use cnnsplitter::modularize::ModularizeConfig;
    let data = DataSelection { dataset: "synthetic".into(), tc: None, data_dir: None, limits: Default::default() };
    let base = ModularizeConfig::new("model".into(), data, Preset::ReferenceCode, 0);
    base.validate().unwrap();
    ModularizeConfig { ga: GaConfig::preset(Preset::Paper), ..base.clone() }.validate().unwrap();
    type Edit = fn(&mut ModularizeConfig);
    let cases: [(&str, Edit); 14] = [
        ("confidence", |c| c.confidence = 1.5),
        ("confidence", |c| c.confidence = f64::NAN),
        ("sensitivity_threshold", |c| c.sensitivity_threshold = -0.1),
        ("sensitivity_images", |c| c.sensitivity_images = 0),
        ("search_images", |c| c.search_images = Some(0)),
        ("population", |c| c.ga.population = 1),
        ("parents", |c| c.ga.parents = 0),
        ("elites", |c| c.ga.elites = c.ga.population + 1),
        ("reset share", |c| c.ga.mutation = Mutation::Reset { share: 2.0 }),
        ("flip probability", |c| c.ga.mutation = Mutation::Flip { probability: -0.5 }),
        ("alpha", |c| c.ga.fitness = FitnessRule::Fixed { alpha: 1.01 }),
        ("thresholds", |c| c.composition.thresholds = vec![0.9, 1.2]),
        ("ntop_max", |c| c.composition.ntop_min = c.composition.ntop_max + 1),
        ("generations", |c| c.stop.generations = 0),
    ];
    for (name, edit) in cases {
        let mut c = base.clone();
        edit(&mut c);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(&format!("`{name}`")), "{name}: {err}");
    }
    let mut none = base.clone();
    none.composition.thresholds.clear();
    assert!(none.validate().unwrap_err().to_string().contains("`thresholds`"));
}

/// Genomes read from a file are checked: words for the length, nothing set beyond it.
#[test]
fn bitsets_from_files_are_checked() {
    let mut b = Bits::zeros(70);
    b.set(69, true);
    let json = serde_json::to_string(&b).unwrap();
    assert_eq!(serde_json::from_str::<Bits>(&json).unwrap(), b);
    let short = json.replace("\"len\":70", "\"len\":940");
    assert!(serde_json::from_str::<Bits>(&short).unwrap_err().to_string().contains("needs 15 words"));
    let beyond = serde_json::to_string(&serde_json::json!({"len": 70, "words": [0, 1u64 << 7]})).unwrap();
    assert!(serde_json::from_str::<Bits>(&beyond).unwrap_err().to_string().contains("beyond its length"));
}

#[test]
fn the_kernel_set_of_checked_masks_equals_the_genomes_kernel_set() {
    // The summary's Diff reads kernel sets from the masks any method hands over; the genetic
    // search reads them from its genomes. Both must name the same kernels (rescnn: residual
    // pairs count once per producing convolution).
    for arch in ["simcnn@0.25", "rescnn@0.25"] {
        let (desc, _, layout) = layout(arch, GroupingKind::Importance);
        let model = cnnsplitter::Model::init(arch, [3, 32, 32], 10, 0).unwrap();
        assert_eq!(model.description, desc);
        let decoder = cnnsplitter::decode::Decoder::new(&model).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for class in 0..10 {
            let g = genome(layout.bits, &mut rng);
            let masks = layout.keep_masks(&decoder, class, &g).unwrap();
            let from_masks = cnnsplitter::modularize::kernel_set(&masks, decoder.groups());
            let from_genome = layout.kernel_set(class, &g);
            assert_eq!(from_masks.len(), from_genome.len(), "{arch}");
            let on = |b: &Bits| (0..b.len()).filter(|&i| b.get(i)).collect::<Vec<_>>();
            assert_eq!(on(&from_masks), on(&from_genome), "{arch} class {class}");
        }
    }
}

#[test]
fn the_search_method_is_written_to_config_json_and_older_files_read_as_genetic() {
    use cnnsplitter::data::presets::DataSelection;
    use cnnsplitter::modularize::{ModularizeConfig, SearchMethod};
    let config = ModularizeConfig::new(
        "m".into(),
        DataSelection { tc: Some(3), ..DataSelection::named("synthetic") },
        Preset::Paper,
        1,
    );
    let json: serde_json::Value = serde_json::to_value(&config).unwrap();
    assert_eq!(json["method"], "genetic");
    // The data selection keeps its keys at the top, as config.json files always had them.
    assert_eq!((json["dataset"].as_str(), json["tc"].as_u64()), (Some("synthetic"), Some(3)));
    assert!(json.get("data").is_none());
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("method");
    let read: ModularizeConfig = serde_json::from_value(old).unwrap();
    assert_eq!((read.method, read), (SearchMethod::Genetic, config));
}
