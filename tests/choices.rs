//! The named value sets the CLI offers: names equal serde's (what configs and reports write),
//! every variant is listed once, and parsing a name gives its value back.

use cnnsplitter::choice::Choice;
use cnnsplitter::data::Source;
use cnnsplitter::data::mix::Split;
use cnnsplitter::engine::EngineChoice;
use cnnsplitter::experiment::Rq;
use cnnsplitter::modularize::genetic::ga::{InitKind, Preset};
use cnnsplitter::modularize::genetic::grouping::GroupingKind;
use cnnsplitter::patch::RuleKind;
use cnnsplitter::train::config::Recipe;

fn check<T: Choice + serde::Serialize + std::fmt::Debug>(variants: usize) {
    assert_eq!(T::ALL.len(), variants, "{}: every variant listed once", std::any::type_name::<T>());
    for (value, name, help) in T::ALL {
        let serde_name = serde_json::to_value(value).unwrap();
        assert_eq!(serde_name.as_str(), Some(*name), "{value:?}");
        assert_eq!(value.name(), *name);
        assert_eq!(T::parse(name), Some(*value));
        assert!(!help.is_empty(), "{value:?} has help");
    }
    let names: std::collections::HashSet<&str> = T::ALL.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(names.len(), variants, "names are distinct");
    assert_eq!(T::parse("no-such-value"), None);
}

#[test]
fn choice_names_are_the_serde_names_and_parse_back() {
    check::<EngineChoice>(3);
    check::<Rq>(3);
    check::<Preset>(2);
    check::<InitKind>(3);
    check::<GroupingKind>(3);
    check::<RuleKind>(2);
    check::<Recipe>(3);
    check::<Source>(5);
    check::<Split>(3);
    assert_eq!(Split::parse("validation"), Some(Split::Val), "the alias");
}
