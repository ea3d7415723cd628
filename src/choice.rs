//! Closed sets of named values a user picks from (command-line values, config keys). Each set
//! lists its values with their names and one-line help, so a front end (the CLI) can offer them
//! without the library depending on it. The names equal the values' serde names.

/// A closed set of named values.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value with its name and a one-line description.
    const ALL: &'static [(Self, &'static str, &'static str)];

    /// Other names accepted for a value: `(alias, name)`.
    const ALIASES: &'static [(&'static str, &'static str)] = &[];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::ALL.iter().find(|(v, ..)| *v == self).map_or("?", |(_, name, _)| name)
    }

    /// The value named `name` (or an alias of it), if any.
    fn parse(name: &str) -> Option<Self> {
        let name = Self::ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, n)| n);
        Self::ALL.iter().find(|(_, n, _)| *n == name).map(|(v, ..)| *v)
    }
}
