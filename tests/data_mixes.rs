//! Presets and declarative mixes: class counts, relabelling, splits and their determinism.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cnnsplitter::data::ImageSet;
use cnnsplitter::data::mat5::{self, MatArray, MatData};
use cnnsplitter::data::mix::{DataSplits, MixSpec};
use cnnsplitter::data::presets::{DataSelection, PRESETS};
use common::formats::*;

fn load(dataset: &str, tc: Option<usize>, dir: &Path) -> DataSplits {
    DataSelection { dataset: dataset.into(), tc, data_dir: Some(dir.to_path_buf()), limits: Default::default() }
        .load()
        .unwrap()
}

fn load_err(dataset: &str, tc: Option<usize>, dir: &Path) -> String {
    DataSelection { dataset: dataset.into(), tc, data_dir: Some(dir.to_path_buf()), limits: Default::default() }
        .load()
        .unwrap_err()
        .to_string()
}

/// (source id, source label, index) of each image of a tagged 3-channel set.
fn tags(set: &ImageSet) -> Vec<(u8, u8, usize)> {
    (0..set.len())
        .map(|i| {
            let p = set.image(i);
            (p[0], p[1], p[2] as usize + 256 * p[3] as usize)
        })
        .collect()
}

#[test]
fn every_preset_parses() {
    for (name, _) in PRESETS {
        let spec = DataSelection::named(name).spec().unwrap();
        assert_eq!(&spec.name, name);
        assert!(!spec.description.is_empty(), "{name} says what it holds");
    }
}

#[test]
fn cifar_weak_mix_takes_nine_cifar100_classes_and_500_target_images() {
    let dir = tempfile::tempdir().unwrap();
    // CIFAR-10: 520 training and 120 test images of class 3 (the TC), a few of the others.
    let mut train10: Vec<u8> = vec![3; 520];
    let mut test10: Vec<u8> = vec![3; 120];
    for c in 0..10u8 {
        train10.extend([c, c]);
        test10.push(c);
    }
    write_cifar10_tagged(&dir.path().join("cifar-10-batches-bin"), &train10, &test10);
    let chosen = [0u8, 2, 5, 8, 9, 12, 15, 22, 70];
    let train100: Vec<u8> = chosen.iter().flat_map(|&c| vec![c; 20]).chain([1, 1, 1]).collect();
    let test100: Vec<u8> = chosen.iter().flat_map(|&c| vec![c; 4]).chain([99]).collect();
    write_cifar100_tagged(&dir.path().join("cifar-100-binary"), &train100, &test100);

    let d = load("cifar10-w", Some(3), dir.path());
    assert_eq!(d.name, "cifar10-w(tc=3)");
    assert_eq!(d.classes(), 10);
    assert_eq!(d.class_names[9], "cat");
    let count = |set: &ImageSet, label: usize| set.per_class(10)[label];
    assert_eq!(count(&d.train, 9) + count(&d.val, 9), 500, "the first 500 TC training images");
    assert_eq!(count(&d.test, 9), 100);
    assert_eq!(d.train.len() + d.val.len(), 9 * 20 + 500);
    assert_eq!(d.test.len(), 9 * 4 + 100);
    // Relabelling: label k holds only CIFAR-100 class chosen[k]; label 9 only CIFAR-10 class 3,
    // and only its first 500 training images.
    for set in [&d.train, &d.val, &d.test] {
        for (i, (source, label, index)) in tags(set).into_iter().enumerate() {
            let new = set.labels[i] as usize;
            if new == 9 {
                assert_eq!((source, label), (10, 3));
                assert!(index < 500 || (10_000..10_100).contains(&index), "index {index}");
            } else {
                assert_eq!((source, label), (100, chosen[new]));
            }
        }
    }
    // About 20% of the training side is validation.
    let val_share = d.val.len() as f64 / (d.train.len() + d.val.len()) as f64;
    assert!((val_share - 0.2).abs() < 0.05, "{val_share}");
}

fn write_svhn(dir: &Path, train: &[f64], test: &[f64]) {
    std::fs::create_dir_all(dir).unwrap();
    for (file, labels, base) in [("train_32x32.mat", train, 0), ("test_32x32.mat", test, 5000)] {
        let n = labels.len();
        let mut x = vec![0u8; 3072 * n];
        for (k, &l) in labels.iter().enumerate() {
            // Row 0, column 0 of channel 0 holds the label; channel 1's first pixel the index.
            x[k * 3072] = l as u8;
            x[k * 3072 + 1024] = ((base + k) % 256) as u8;
        }
        let arrays = vec![
            MatArray { name: "X".into(), dims: vec![32, 32, 3, n], data: MatData::U8(x) },
            MatArray { name: "y".into(), dims: vec![n, 1], data: MatData::F64(labels.to_vec()) },
        ];
        std::fs::write(dir.join(file), mat5::write(&arrays, true)).unwrap();
    }
}

#[test]
fn svhn_strong_and_weak_presets_select_and_relabel_digits() {
    let dir = tempfile::tempdir().unwrap();
    let train: Vec<f64> = (0..200).map(|i| (i % 10 + 1) as f64).collect(); // 1..=10, 10 = digit 0
    let test: Vec<f64> = (0..50).map(|i| (i % 10 + 1) as f64).collect();
    write_svhn(&dir.path().join("svhn"), &train, &test);

    let s = load("svhn-s", None, dir.path());
    assert_eq!(s.class_names, vec!["0", "1", "2", "3", "4"]);
    assert_eq!(s.train.len() + s.val.len(), 100);
    assert_eq!(s.test.per_class(5), vec![5; 5]);
    assert!(s.digits, "digits are not flipped");

    let w = load("svhn-w", Some(3), dir.path());
    assert_eq!(w.class_names, vec!["6", "7", "8", "9", "3"]);
    let digit = |set: &ImageSet, i: usize| {
        let raw = set.image(i)[0];
        if raw == 10 { 0 } else { raw }
    };
    for set in [&w.train, &w.val, &w.test] {
        for i in 0..set.len() {
            let expected = [6, 7, 8, 9, 3][set.labels[i] as usize];
            assert_eq!(digit(set, i), expected);
        }
    }
    assert_eq!(w.test.per_class(5), vec![5; 5]);
    let err = load_err("svhn-w", None, dir.path());
    assert!(err.contains("needs the target class"), "{err}");
    let err = load_err("svhn-s", Some(1), dir.path());
    assert!(err.contains("has no target class"), "{err}");
}

#[test]
fn mnist_presets_split_8_1_1_pad_to_32_and_share_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<u8> = (0..500).map(|i| (i * 7 % 10) as u8).collect();
    write_mnist_tagged(&dir.path().join("mnist"), &labels);

    let all = load("mnist", None, dir.path());
    assert_eq!((all.train.len(), all.val.len(), all.test.len()), (400, 50, 50));
    assert_eq!(all.shape(), [1, 32, 32]);
    // The digit is centred: original pixel (0, 0) is at (2, 2), the border is background.
    let img = all.test.image(0);
    assert_eq!(img[2 * 32 + 2] as u16, all.test.labels[0]);
    assert!(img[..2 * 32].iter().all(|&p| p == 0));
    assert_eq!(all.normalization.mean.len(), 1);

    let s = load("mnist-s", None, dir.path());
    let w = load("mnist-w", Some(2), dir.path());
    assert_eq!(w.class_names, vec!["6", "7", "8", "9", "2"]);
    let index = |set: &ImageSet, i: usize| set.image(i)[2 * 32 + 3] as usize + 256 * set.image(i)[2 * 32 + 4] as usize;
    let digit_two = |set: &ImageSet, label: u16| -> BTreeSet<usize> {
        (0..set.len()).filter(|&i| set.labels[i] == label).map(|i| index(set, i)).collect()
    };
    // Digit 2 is label 2 in MNIST-S and label 4 (the TC) in MNIST-W: the same images in each split.
    assert_eq!(digit_two(&s.test, 2), digit_two(&w.test, 4));
    assert_eq!(digit_two(&s.train, 2), digit_two(&w.train, 4));
    assert!(!digit_two(&s.test, 2).is_empty());
}

fn custom(toml: &str, dir: &Path) -> DataSplits {
    let path = dir.join("mix.toml");
    std::fs::write(&path, toml).unwrap();
    load(path.to_str().unwrap(), None, dir)
}

#[test]
fn a_toml_mix_merges_sources_with_explicit_labels_and_coarse_classes() {
    let dir = tempfile::tempdir().unwrap();
    write_cifar10_tagged(dir.path(), &[0, 1, 2, 1, 1, 0, 9, 9, 9, 9], &[1, 9]);
    write_cifar100_tagged(&dir.path().join("cifar-100-binary"), &[10, 11, 12, 50], &[14, 55]);
    let d = custom(
        r#"
name = "custom"
[[part]]
source = "cifar10"
classes = ["automobile", 9]
labels = [2, 0]
take_train = 3
[[part]]
source = "cifar100"
classes = [2]          # coarse class 2 = fine 10..14
coarse = true
labels = [1]
[split]
mode = "official"
val = 0.0
seed = 5
"#,
        dir.path(),
    );
    assert_eq!(d.class_names, vec!["truck", "coarse_2", "automobile"]);
    assert_eq!(d.train.per_class(3), vec![3, 3, 3], "3 trucks (limited), 3 coarse-2 images, 3 automobiles");
    assert_eq!(d.test.per_class(3), vec![1, 1, 1]);
    assert!(d.val.is_empty());
}

#[test]
fn splits_are_deterministic_from_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<u8> = (0..300).map(|i| (i % 10) as u8).collect();
    write_mnist_tagged(dir.path(), &labels);
    let toml = |seed: u64| {
        format!(
            "name = \"m\"\n[[part]]\nsource = \"mnist\"\n[split]\nmode = \"pool\"\nratios = [6.0, 2.0, 2.0]\nseed = {seed}\n"
        )
    };
    let a = custom(&toml(1), dir.path());
    let b = custom(&toml(1), dir.path());
    let c = custom(&toml(2), dir.path());
    assert_eq!(*a.train, *b.train);
    assert_eq!(*a.test, *b.test);
    assert_ne!(*a.train, *c.train);
    assert_eq!((a.train.len(), a.val.len(), a.test.len()), (180, 60, 60));
}

#[test]
fn bad_descriptions_and_missing_data_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_err("nosuch", None, dir.path());
    assert!(err.contains("unknown dataset") && err.contains("mnist-s"), "{err}");
    let err = load_err("cifar10", None, dir.path());
    assert!(err.contains("data fetch cifar10"), "{err}");
    let err =
        MixSpec::from_toml("name = \"x\"\n[[part]]\nsource = \"imagenet\"\n[split]\nmode = \"pool\"\n").unwrap_err();
    assert!(err.to_string().contains("imagenet"), "{err}");
    let err = MixSpec::from_toml("name = \"x\"\n[[part]]\nsource = \"mnist\"\nclass = [1]\n[split]\nmode = \"pool\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("class"), "{err}");
    write_mnist_tagged(dir.path(), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 0]);
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"b\"\n[[part]]\nsource = \"mnist\"\nclasses = [12]\n[split]\nmode = \"pool\"\n")
        .unwrap();
    let err = load_err(path.to_str().unwrap(), None, dir.path());
    assert!(err.contains("class 12"), "{err}");
}

#[test]
fn synthetic_preset_has_balanced_classes_and_an_80_20_split() {
    let d = DataSelection::named("synthetic").load().unwrap();
    assert_eq!(d.classes(), 10);
    assert_eq!(d.train.len() + d.val.len(), 10_000);
    assert_eq!(d.test.per_class(10), vec![200; 10]);
    assert_eq!(d.val.len(), 2_000);
    let mut per_class: BTreeMap<u16, usize> = BTreeMap::new();
    for &l in d.train.labels.iter().chain(&d.val.labels) {
        *per_class.entry(l).or_default() += 1;
    }
    assert!(per_class.values().all(|&c| c == 1000));
}

#[test]
fn limits_keep_a_seeded_subset_per_class_with_a_separate_cap_for_the_target_class() {
    use cnnsplitter::data::mix::{ClassLimit, SplitLimits};
    let dir = tempfile::tempdir().unwrap();
    let selection = |limits: SplitLimits| DataSelection {
        dataset: "synthetic-w-tiny".into(),
        tc: Some(2),
        data_dir: Some(dir.path().to_path_buf()),
        limits,
    };
    let full = selection(SplitLimits::default()).load().unwrap();
    let limits = SplitLimits {
        train: ClassLimit { per_class: Some(20), tc: Some(3) },
        val: ClassLimit { per_class: Some(7), tc: None },
    };
    let limited = selection(limits).load().unwrap();
    // Label 4 is the target class: 3 training images of it, 20 of every other class; the
    // validation split keeps 7 of every class (the TC's cap falls back to per_class).
    assert_eq!(limited.train.per_class(5), vec![20, 20, 20, 20, 3]);
    assert_eq!(limited.val.per_class(5), vec![7; 5]);
    assert_eq!(limited.test, full.test, "the test split is never limited");
    // A subset of the full split, in its order.
    let images = |set: &ImageSet| (0..set.len()).map(|i| set.image(i).to_vec()).collect::<Vec<_>>();
    let all = images(&full.train);
    let mut at = 0;
    for img in images(&limited.train) {
        at += all[at..].iter().position(|x| *x == img).expect("kept images come from the split, in order") + 1;
    }
    // Drawn from the seed, not the first images of each class; the same every time.
    let first_20: Vec<usize> = (0..full.train.len()).filter(|&i| full.train.labels[i] == 0).take(20).collect();
    let kept_0: Vec<Vec<u8>> = (0..limited.train.len())
        .filter(|&i| limited.train.labels[i] == 0)
        .map(|i| limited.train.image(i).to_vec())
        .collect();
    assert_ne!(kept_0, first_20.iter().map(|&i| full.train.image(i).to_vec()).collect::<Vec<_>>());
    assert_eq!(selection(limits).load().unwrap().train, limited.train);
    // Caps above the class sizes keep everything; a TC cap on a mix without a TC is refused.
    let loose = SplitLimits { train: ClassLimit { per_class: Some(1_000_000), tc: None }, ..Default::default() };
    assert_eq!(selection(loose).load().unwrap().train, full.train);
    let zero = SplitLimits { val: ClassLimit { per_class: Some(0), tc: None }, ..Default::default() };
    let err = selection(zero).load().unwrap_err().to_string();
    assert!(err.contains("at least 1"), "{err}");
    let no_tc = DataSelection { dataset: "synthetic-s-tiny".into(), tc: None, ..selection(limits) };
    let err = no_tc.load().unwrap_err().to_string();
    assert!(err.contains("no target class"), "{err}");
}

#[test]
fn a_mix_can_carry_its_own_limits() {
    let dir = tempfile::tempdir().unwrap();
    let d = custom(
        "name = \"scarce\"\n[synthetic]\ntrain = 1000\ntest = 200\n[[part]]\nsource = \"synthetic\"\nclasses = [0, 1, 2]\n\
         [split]\nmode = \"official\"\nval = 0.2\n[limit]\ntrain = { per_class = 9 }\n",
        dir.path(),
    );
    assert_eq!(d.train.per_class(3), vec![9, 9, 9]);
    let err = MixSpec::from_toml(
        "name = \"x\"\n[[part]]\nsource = \"synthetic\"\n[split]\nmode = \"pool\"\n[limit]\ntrain = { tc = 3 }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("caps the target class"), "{err}");
}
