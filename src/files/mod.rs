//! Files of run folders: atomic writes of files and whole folders, JSON and JSONL; every error
//! names the file.

pub mod lock;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary sibling file (`<name>.partial`) renamed into
/// place, so a reader never sees a half-written file; the temporary file is removed when the
/// write fails (a full disk leaves nothing behind).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".partial");
    let written = write_synced(&tmp, bytes)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` to a new file at `path` and flushes it to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Creates the folder `out` whole: `fill` writes into a temporary sibling folder
/// (`<name>.partial`), which is then renamed to `out`; on an error the temporary folder is
/// removed and nothing is left at `out`.
pub fn write_dir_atomic(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = out.to_path_buf();
    tmp.as_mut_os_string().push(".partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = fill(&tmp).and_then(|_| std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e)));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// [`write_dir_atomic`] for an output that may already exist (replaced, as asked with
/// `--force`): the old `out` is removed only once the new folder is complete, right before the
/// rename; on an error the old output is left as it was.
pub fn replace_dir_atomic(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = out.to_path_buf();
    tmp.as_mut_os_string().push(".partial");
    let _ = std::fs::remove_dir_all(&tmp);
    let written = fill(&tmp).and_then(|_| {
        remove_output(out)?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// Removes the file, folder or link at `out`, if anything is there (a link itself, never what
/// it points to).
pub fn remove_output(out: &Path) -> Result<()> {
    let Ok(meta) = out.symlink_metadata() else { return Ok(()) };
    let removed = if meta.is_dir() { std::fs::remove_dir_all(out) } else { std::fs::remove_file(out) };
    removed.map_err(|e| Error::file(out, format!("cannot remove it to replace it: {e}")))
}

/// `path` made absolute with every link and `..` resolved, also where its last components do
/// not exist yet (they are appended to the resolved folder that does).
pub fn resolved(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let mut existing = lexical.as_path();
    let mut rest = Vec::new();
    let mut out = loop {
        match std::fs::canonicalize(existing) {
            Ok(p) => break p,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                _ => break existing.to_path_buf(),
            },
        }
    };
    out.extend(rest.iter().rev());
    Ok(out)
}

/// Refuses an output (`flag`: `--out`, `--onnx`) that is, lies inside or contains one of
/// `inputs`, before anything is written or deleted: `--force` would delete the input, and
/// writing inside an input changes what it holds. Links and `..` are resolved first.
pub fn check_outside_inputs(flag: &str, out: &Path, inputs: &[&Path]) -> Result<()> {
    let target = resolved(out)?;
    for &input in inputs {
        let source = resolved(input)?;
        let relation = if target == source {
            "is"
        } else if target.starts_with(&source) {
            "lies inside"
        } else if source.starts_with(&target) {
            "contains"
        } else {
            continue;
        };
        return Err(Error::OutputOverlapsInput {
            flag: flag.to_string(),
            out: out.to_path_buf(),
            input: input.to_path_buf(),
            relation,
        });
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `path` (creating its folder) through a temporary file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, serde_json::to_string_pretty(value).expect("serializable").as_bytes())
}

/// Writes `rows` as JSON Lines (one compact object per line) to `path`, atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let text: String = rows.iter().map(|r| serde_json::to_string(r).expect("serializable") + "\n").collect();
    write_atomic(path, text.as_bytes())
}

/// Reads a JSON Lines file written by [`write_jsonl`]; the error names the file and the line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1))))
        .collect()
}

/// Reads a JSON file written by [`write_json`]; the error names the file and what is wrong.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("is not a valid file of this run: {e}")))
}
