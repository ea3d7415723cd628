//! The library's floor plan holds: every `crate::` import goes to a module on the same floor or
//! below, and the modules of one floor import each other without a circle. The floors are
//! those of the library's doc (`src/lib.rs`); the binary (`main.rs`, `cli/`) stands on top.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The floors, from the ground up.
const FLOORS: &[&[&str]] = &[
    &["error", "seed", "choice", "compute", "records", "progress", "files"],
    &["model", "graph", "decode", "export", "data", "folders"],
    &["engine"],
    &["eval"],
    &["train"],
    &["modularize"],
    &["patch"],
    &["experiment", "bench"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// `text` without `//` comments and without the unit tests that follow a `#[cfg(test)]`.
fn code_of(text: &str) -> String {
    let text = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The top-level modules that `code` names as `crate::NAME`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        // `cnnsplitter::crate::` cannot occur; a preceding identifier character means another path.
        let before = rest[..i].chars().last();
        if !name.is_empty() && !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            found.insert(name);
        }
        rest = after;
    }
    found
}

/// Every library source file's top-level module and its code.
fn library_files() -> Vec<(String, String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let top = rel.split('/').next().unwrap().trim_end_matches(".rs").to_string();
                if ["main", "lib", "cli"].contains(&top.as_str()) {
                    continue;
                }
                out.push((top, rel, code_of(&std::fs::read_to_string(&path).unwrap())));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// `from -> to` edges between top-level modules, each with the files that make it.
fn module_graph() -> BTreeMap<(String, String), Vec<String>> {
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (top, rel, code) in library_files() {
        for name in crate_references(&code) {
            if name != top {
                edges.entry((top.clone(), name)).or_default().push(rel.clone());
            }
        }
    }
    edges
}

#[test]
fn the_reference_finder_reads_paths_and_skips_comments_and_unit_tests() {
    let code = code_of(
        "use crate::model::Model; // crate::bench in a comment\nlet x = crate::data::f();\n\
         /// [`crate::patch`]\nmy_crate::other();\n#[cfg(test)]\nmod tests { use crate::experiment; }",
    );
    assert_eq!(crate_references(&code), BTreeSet::from(["data".to_string(), "model".to_string()]));
}

#[test]
fn every_library_module_is_on_a_floor() {
    let modules: BTreeSet<String> = library_files().into_iter().map(|(top, ..)| top).collect();
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for module in &modules {
        assert!(floor_of(module).is_some(), "src/{module}: put it on a floor in tests/layers.rs and src/lib.rs");
        assert!(lib.contains(&format!("`{module}`")), "src/lib.rs's floor plan does not name `{module}`");
    }
}

#[test]
fn no_module_imports_one_on_a_higher_floor() {
    let upward: Vec<String> = module_graph()
        .into_iter()
        .filter(|((from, to), _)| floor_of(to) > floor_of(from))
        .map(|((from, to), files)| format!("{from} -> {to} ({})", files.join(", ")))
        .collect();
    assert!(upward.is_empty(), "imports from a lower floor to a higher one:\n{}", upward.join("\n"));
}

#[test]
fn no_import_circle_between_modules() {
    let edges = module_graph();
    let modules: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    // A circle exists when some module reaches itself.
    for start in modules {
        let mut seen = BTreeSet::new();
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for ((from, to), _) in edges.range((at.clone(), String::new())..) {
                if from != &at {
                    break;
                }
                assert!(to != start, "an import circle: {} -> {start}", path.join(" -> "));
                if seen.insert(to.clone()) {
                    let mut longer = path.clone();
                    longer.push(to.clone());
                    stack.push((to.clone(), longer));
                }
            }
        }
    }
}
