//! Typed errors of the library. Every variant names the file, layer or value at fault.

use std::path::PathBuf;

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed. (The system's error is part of the message, not a
    /// separate cause, so that a printed chain names it once.)
    #[error("{}: {error}", printable_path(path))]
    Io {
        /// The file or folder being accessed.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file exists but its content is not what was expected.
    #[error("{}: {message}", printable_path(path))]
    File {
        /// The file at fault.
        path: PathBuf,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A layer of a model description is inconsistent (shapes, references, parameters).
    #[error("layer `{layer}`: {message}")]
    Layer {
        /// The layer's name in the description.
        layer: String,
        /// What was wrong.
        message: String,
    },
    /// A tensor has another shape than the model description requires.
    #[error("tensor `{name}` has shape {found:?}, but the model description needs {expected:?}")]
    TensorShape {
        /// The tensor's name (`<layer>.<param>`).
        name: String,
        /// The shape the description requires.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A value given by the caller (an argument, a config key, an architecture name, a mask, a
    /// dataset that does not fit) is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The inference engine is missing or failed (ONNX Runtime's library, a session).
    #[error("{0}")]
    Engine(String),
    /// A computation gave a non-finite or degenerate result (a NaN loss, a singular fit).
    #[error("{0}")]
    Numeric(String),
    /// A value could not be written in a file format (TOML, ONNX protobuf, safetensors).
    #[error("{0}")]
    Serialize(String),
    /// Another process holds the output this run would write (an `OUT.lock` file).
    #[error(
        "{} is being written by {}: wait for it to end, or stop it (its lock: {})",
        printable_path(path),
        holder,
        printable_path(lock)
    )]
    Busy {
        /// The output.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// Who holds it, in words (`process N on HOST (started ...: COMMAND)`).
        holder: String,
    },
    /// An output would overwrite, or be written inside, one of the run's inputs.
    #[error(
        "{flag} {} {relation} the input {}: {}",
        printable_path(out),
        printable_path(input),
        "choose an output outside every input (nothing was written or deleted)"
    )]
    OutputOverlapsInput {
        /// The flag naming the output (`--out`, `--onnx`).
        flag: String,
        /// The output.
        out: PathBuf,
        /// The input it overlaps.
        input: PathBuf,
        /// `is`, `lies inside` or `contains`.
        relation: &'static str,
    },
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), for messages that quote names
/// from files and the command line.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A path for a message, with control characters escaped.
pub fn printable_path(path: &std::path::Path) -> String {
    printable(&path.display().to_string())
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }

    /// An [`Error::Invalid`] unless `value` lies in `[low, high]` (NaN never does); the message
    /// names the setting `name`.
    pub fn check_range(name: &str, value: f64, low: f64, high: f64) -> Result<()> {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(Error::Invalid(format!("`{name}` must lie in [{low}, {high}] (it is {value})")))
        }
    }

    /// An [`Error::Invalid`] unless `value >= low`; the message names the setting `name`.
    pub fn check_at_least(name: &str, value: usize, low: usize) -> Result<()> {
        if value >= low {
            Ok(())
        } else {
            Err(Error::Invalid(format!("`{name}` must be at least {low} (it is {value})")))
        }
    }

    /// An [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File { path: path.into(), message: message.into() }
    }

    /// An [`Error::Layer`] for the layer named `layer`.
    pub fn layer(layer: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Layer { layer: layer.into(), message: message.into() }
    }

    /// Prefixes the message with the file it came from (for errors found while loading a file).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            Error::Io { .. } | Error::File { .. } => self,
            other => Error::file(path, other.to_string()),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
