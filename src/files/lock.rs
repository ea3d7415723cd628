//! Owning an output for the length of a run: a lock file `<out>.lock` beside the output, held
//! with an advisory file lock (`flock`), so a second process writing the same output is refused
//! with who holds it, and a lock left by a process that died is free again (the system releases a
//! dead process's locks) and is taken over.
//!
//! Locks are re-entrant within a process: the command line takes the lock of its `--out` before
//! it checks and clears it, and the library stage it calls takes the same lock again; the lock
//! file goes when the last holder drops its [`OutputLock`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who holds (or last held) a lock: what the lock file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// The machine's host name (the pid means something there only).
    pub host: String,
    /// When the process took the lock, in seconds since 1970 (UTC).
    pub started: u64,
    /// The process's command line.
    pub command: String,
}

impl Holder {
    /// This process, now.
    fn this_process() -> Holder {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let command: Vec<String> = std::env::args().collect();
        Holder { pid: std::process::id(), host: host_name(), started, command: command.join(" ") }
    }

    /// `process N on HOST (started YYYY-MM-DD hh:mm:ss UTC: COMMAND)`, with control characters
    /// escaped.
    pub fn describe(&self) -> String {
        format!(
            "process {} on {} (started {}: {})",
            self.pid,
            crate::error::printable(&self.host),
            utc_time(self.started),
            crate::error::printable(&self.command)
        )
    }
}

impl Holder {
    /// The holder in words; an empty record (being written this very moment) as "another process".
    fn in_words(&self) -> String {
        if self.pid == 0 { "another process".to_string() } else { self.describe() }
    }
}

/// The machine's host name (Linux), else `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Seconds since 1970 as `YYYY-MM-DD hh:mm:ss UTC` (the proleptic Gregorian calendar).
pub fn utc_time(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest / 60 % 60, rest % 60)
}

/// A held lock of one output; the lock is released (and its file removed) when the last
/// `OutputLock` of that output in this process is dropped.
#[derive(Debug, Clone)]
pub struct OutputLock {
    held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    /// The open lock file (the advisory lock lives on it).
    file: File,
    /// Its path (`<out>.lock`, canonical).
    path: PathBuf,
    /// The output it guards.
    out: PathBuf,
    /// Folders created to hold the lock file, outermost first (removed again if left empty).
    created: Vec<PathBuf>,
    /// The holder recorded in a lock file found unlocked (a process that died holding it).
    taken_over: Option<Holder>,
}

/// The locks this process holds, by lock-file path.
fn held_locks() -> &'static Mutex<HashMap<PathBuf, Weak<Held>>> {
    static HELD: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Held>>>> = std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

/// `<out>.lock` for the output `out`, as a canonical path (the folder holding `out` is resolved,
/// so every spelling of one output gives one lock), and the folders created to hold it.
fn lock_path(out: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let absolute = std::path::absolute(out).map_err(|e| Error::io(out, e))?;
    let resolved = std::fs::canonicalize(&absolute).ok();
    let target = match resolved {
        Some(p) => p,
        None => {
            let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                return Err(Error::file(out, "does not name a file or folder to write"));
            };
            let mut created = Vec::new();
            let mut missing = Some(parent);
            while let Some(dir) = missing.filter(|d| !d.exists()) {
                created.push(dir.to_path_buf());
                missing = dir.parent();
            }
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::file(out, format!("cannot create its folder {}: {e}", crate::error::printable_path(parent)))
            })?;
            created.reverse();
            let parent = std::fs::canonicalize(parent).map_err(|e| Error::io(parent, e))?;
            let mut lock = parent.join(name);
            lock.as_mut_os_string().push(".lock");
            return Ok((lock, created));
        }
    };
    let mut lock = target.clone();
    if target.file_name().is_none() {
        return Err(Error::file(out, "does not name a file or folder to write"));
    }
    lock.as_mut_os_string().push(".lock");
    Ok((lock, Vec::new()))
}

impl OutputLock {
    /// Takes the lock of the output `out` (a file or folder, which need not exist; the folder
    /// that will hold it is created). An [`Error::Busy`] naming the holder when another process
    /// holds it; a lock file left by a process that died is taken over
    /// ([`OutputLock::taken_over`] says whose it was).
    pub fn acquire(out: &Path) -> Result<OutputLock> {
        let (path, created) = lock_path(out)?;
        let mut held = held_locks().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = held.get(&path).and_then(Weak::upgrade) {
            return Ok(OutputLock { held: existing });
        }
        let (file, taken_over) = lock_file(&path, out)?;
        let new = Arc::new(Held { file, path: path.clone(), out: out.to_path_buf(), created, taken_over });
        held.insert(path, Arc::downgrade(&new));
        Ok(OutputLock { held: new })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.held.path
    }

    /// Whose lock this process took over (a process that died, or was killed, holding it).
    pub fn taken_over(&self) -> Option<&Holder> {
        self.held.taken_over.as_ref()
    }

    /// The holder of the lock of `out` now, if a process holds it (this one included).
    pub fn holder(out: &Path) -> Option<Holder> {
        let (path, _) = lock_path_quiet(out)?;
        let mut file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        match file.try_lock() {
            Ok(()) => {
                // Nobody held it; let go at once (closing the file releases it).
                None
            }
            Err(_) => Some(read_holder(&mut file).unwrap_or_else(unknown_holder)),
        }
    }
}

/// [`lock_path`] without creating any folder (`None` when the output's folder does not exist).
fn lock_path_quiet(out: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
    let absolute = std::path::absolute(out).ok()?;
    let parent = absolute.parent()?;
    if !parent.exists() {
        return None;
    }
    lock_path(out).ok()
}

/// A holder whose lock file is still empty (it is being written this very moment).
fn unknown_holder() -> Holder {
    Holder { pid: 0, host: String::new(), started: 0, command: String::new() }
}

/// The holder recorded in a lock file.
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Opens and locks the lock file at `path` (for the output `out`), retrying when another
/// process removed it between the open and the lock; records this process in it.
fn lock_file(path: &Path, out: &Path) -> Result<(File, Option<Holder>)> {
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // The holder writes its record right after it takes the lock: give it a moment.
                let holder = (0..50)
                    .find_map(|_| {
                        read_holder(&mut file).or_else(|| {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            None
                        })
                    })
                    .unwrap_or_else(unknown_holder);
                return Err(Error::Busy {
                    path: out.to_path_buf(),
                    lock: path.to_path_buf(),
                    holder: holder.in_words(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::file(
                    path,
                    format!(
                        "cannot take the lock of `{}` (this file system may not support locks): {e}",
                        out.display()
                    ),
                ));
            }
        }
        // The holder before us may have removed the file after we opened it: then the lock is
        // on a file nobody else will open, and we start again.
        if !same_file(&file, path) {
            continue;
        }
        let taken_over = read_holder(&mut file);
        let record = serde_json::to_string(&Holder::this_process()).expect("serializable");
        let written = file
            .set_len(0)
            .and_then(|_| file.rewind())
            .and_then(|_| file.write_all(record.as_bytes()))
            .and_then(|_| file.flush());
        written.map_err(|e| Error::io(path, e))?;
        return Ok((file, taken_over));
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = held_locks().lock().unwrap_or_else(|p| p.into_inner());
        if held.get(&self.path).is_some_and(|w| w.strong_count() == 0) {
            held.remove(&self.path);
        }
        // Remove the file while it is locked and ours: a process waiting on it then finds it
        // gone and starts again on a new one.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
        if !self.out.exists() {
            for dir in self.created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_796_381_943), "2026-12-04 10:59:03 UTC");
        assert_eq!(utc_time(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn a_lock_is_reentrant_in_a_process_and_goes_with_its_last_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a").join("b").join("run");
        let first = OutputLock::acquire(&out).unwrap();
        let second = OutputLock::acquire(&dir.path().join("a/b/../b/run")).unwrap();
        assert_eq!(first.path(), second.path());
        assert!(first.path().is_file());
        let holder = OutputLock::holder(&out).expect("held");
        assert_eq!(holder.pid, std::process::id());
        drop(first);
        assert!(second.path().is_file(), "still held by the second");
        let path = second.path().to_path_buf();
        drop(second);
        assert!(!path.exists(), "the lock file goes with the last holder");
        assert!(!dir.path().join("a").exists(), "folders made for the lock go when nothing was written");
        assert!(OutputLock::holder(&out).is_none());
    }

    #[test]
    fn a_lock_file_nobody_holds_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let dead = Holder { pid: 999_999, host: "gone".into(), started: 5, command: "cnnsplitter train".into() };
        std::fs::write(dir.path().join("run.lock"), serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = OutputLock::acquire(&out).unwrap();
        assert_eq!(lock.taken_over(), Some(&dead));
        let now: Holder = serde_json::from_str(&std::fs::read_to_string(lock.path()).unwrap()).unwrap();
        assert_eq!(now.pid, std::process::id());
    }
}
