//! JSON files of run folders: atomic pretty writes and reads whose errors name the file.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::model::write_atomic;

/// Writes `value` as pretty JSON to `path` (creating its folder) through a temporary file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(path, serde_json::to_string_pretty(value).expect("serializable").as_bytes())
}

/// Reads a JSON file written by [`write_json`]; the error names the file and what is wrong.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("is not a valid file of this run: {e}")))
}
