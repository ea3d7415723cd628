//! Downloads the published datasets from their own addresses, checks the published MD5 sums,
//! unpacks archives, and resumes or skips what is already there.
//!
//! A file is downloaded to `<name>.partial` (resumed with an HTTP range request when a partial
//! file exists), checked, then renamed; an archive is unpacked into a temporary folder that is
//! renamed into place. A failed download or a checksum mismatch leaves no file with the final
//! name behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::progress::Progress;

/// Environment variable that replaces every file's base address (a mirror, or a test server).
pub const BASE_URL_ENV: &str = "CNNSPLITTER_DATA_URL";

/// One published file.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteFile {
    /// File name, also the last part of its address.
    pub name: String,
    /// Published MD5 sum (lowercase hex).
    pub md5: String,
    /// Sub-folder of the data folder the file is stored in (`""` for the data folder itself).
    pub folder: String,
    /// For a `.tar.gz` archive: the folder it unpacks to (whose presence means "already done").
    pub unpacks_to: Option<String>,
}

/// A dataset's published files and where they are served.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// Dataset name (`cifar10`, ...).
    pub dataset: String,
    /// Address the file names are appended to.
    pub base_url: String,
    /// The files.
    pub files: Vec<RemoteFile>,
}

fn file(name: &str, md5: &str, folder: &str, unpacks_to: Option<&str>) -> RemoteFile {
    RemoteFile { name: name.into(), md5: md5.into(), folder: folder.into(), unpacks_to: unpacks_to.map(String::from) }
}

/// The official files of `dataset` (`cifar10`, `cifar100`, `svhn`, `mnist`); `python` picks
/// the python-pickle version of CIFAR instead of the binary one.
pub fn official(dataset: &str, python: bool) -> Result<Remote> {
    let toronto = "https://www.cs.toronto.edu/~kriz";
    let (base, files) = match (dataset, python) {
        ("cifar10", false) => (
            toronto,
            vec![file("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530", "", Some("cifar-10-batches-bin"))],
        ),
        ("cifar10", true) => (
            toronto,
            vec![file("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "", Some("cifar-10-batches-py"))],
        ),
        ("cifar100", false) => (
            toronto,
            vec![file("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8", "", Some("cifar-100-binary"))],
        ),
        ("cifar100", true) => (
            toronto,
            vec![file("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "", Some("cifar-100-python"))],
        ),
        ("svhn", _) => (
            "http://ufldl.stanford.edu/housenumbers",
            vec![
                file("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", "svhn", None),
                file("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", "svhn", None),
            ],
        ),
        ("mnist", _) => (
            "https://ossci-datasets.s3.amazonaws.com/mnist",
            vec![
                file("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "mnist", None),
                file("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "mnist", None),
                file("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "mnist", None),
                file("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "mnist", None),
            ],
        ),
        (other, _) => {
            return Err(Error::Invalid(format!("cannot fetch `{other}`; expected cifar10, cifar100, svhn or mnist")));
        }
    };
    let base_url = std::env::var(BASE_URL_ENV).unwrap_or_else(|_| base.to_string());
    Ok(Remote { dataset: dataset.to_string(), base_url, files })
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileOutcome {
    /// File name.
    pub name: String,
    /// `downloaded`, `resumed`, `already there`, or `already unpacked`.
    pub action: String,
    /// Bytes transferred.
    pub bytes: u64,
}

/// Fetches every file of `remote` into `dir`.
pub fn fetch(remote: &Remote, dir: &Path, progress: &dyn Progress) -> Result<Vec<FileOutcome>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut outcomes = Vec::new();
    for f in &remote.files {
        let folder = dir.join(&f.folder);
        if let Some(target) = &f.unpacks_to
            && folder.join(target).is_dir()
        {
            outcomes.push(FileOutcome { name: f.name.clone(), action: "already unpacked".into(), bytes: 0 });
            continue;
        }
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        let dest = folder.join(&f.name);
        let outcome = if dest.is_file() && md5_file(&dest)? == f.md5 {
            FileOutcome { name: f.name.clone(), action: "already there".into(), bytes: 0 }
        } else {
            let url = format!("{}/{}", remote.base_url.trim_end_matches('/'), f.name);
            download(&agent, &url, &dest, &f.md5, progress)?
        };
        if let Some(target) = &f.unpacks_to {
            progress.note(&format!("unpacking {}", f.name));
            unpack_tar_gz(&dest, &folder, target)?;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// MD5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

fn offline_hint(url: &str, dest: &Path, err: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "cannot download {url}: {err}. This machine may be offline: download the file by other means \
         into {} (or point {BASE_URL_ENV} at a mirror) and run the command again",
        dest.parent().unwrap_or(Path::new(".")).display()
    ))
}

/// Downloads `url` to `dest` via `dest.partial`, resuming a partial file, and checks its MD5.
fn download(agent: &ureq::Agent, url: &str, dest: &Path, md5: &str, progress: &dyn Progress) -> Result<FileOutcome> {
    let partial = partial_path(dest);
    let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let mut request = agent.get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // The partial file is not a prefix the server recognises: start over.
            std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
            return download(agent, url, dest, md5, progress);
        }
        Err(ureq::Error::Status(code, _)) => {
            return Err(Error::Invalid(format!("cannot download {url}: the server answered HTTP {code}")));
        }
        Err(e) => return Err(offline_hint(url, dest, e)),
    };
    let resumed = response.status() == 206;
    let length: Option<u64> = response.header("Content-Length").and_then(|v| v.parse().ok());
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&partial)
        .map_err(|e| Error::io(&partial, e))?;
    let start = if resumed { have } else { 0 };
    progress.start(
        &format!("downloading {}", dest.file_name().unwrap_or_default().to_string_lossy()),
        length.map_or(0, |l| l + start),
    );
    progress.advance(start);
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| offline_hint(url, dest, e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io(&partial, e))?;
        received += n as u64;
        progress.advance(n as u64);
    }
    out.flush().map_err(|e| Error::io(&partial, e))?;
    drop(out);
    progress.finish();
    if let Some(l) = length
        && received < l
    {
        return Err(Error::Invalid(format!(
            "the download of {url} stopped after {received} of {l} bytes; run the command again to resume"
        )));
    }
    let got = md5_file(&partial)?;
    if got != md5 {
        std::fs::remove_file(&partial).map_err(|e| Error::io(&partial, e))?;
        return Err(Error::file(
            dest,
            format!(
                "checksum mismatch: expected MD5 {md5}, got {got}; the download was removed, run the command again"
            ),
        ));
    }
    std::fs::rename(&partial, dest).map_err(|e| Error::io(dest, e))?;
    Ok(FileOutcome {
        name: dest.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        action: if resumed { "resumed".into() } else { "downloaded".into() },
        bytes: received,
    })
}

/// Unpacks a `.tar.gz` into `folder` through a temporary folder; `target` must appear.
fn unpack_tar_gz(archive: &Path, folder: &Path, target: &str) -> Result<()> {
    let tmp = folder.join(format!(".unpacking-{target}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let result = (|| {
        let f = File::open(archive).map_err(|e| Error::io(archive, e))?;
        tar::Archive::new(flate2::read::GzDecoder::new(f))
            .unpack(&tmp)
            .map_err(|e| Error::file(archive, format!("is not a readable .tar.gz archive: {e}")))?;
        let unpacked = tmp.join(target);
        if !unpacked.is_dir() {
            return Err(Error::file(archive, format!("does not contain the folder `{target}`")));
        }
        let dest = folder.join(target);
        std::fs::rename(&unpacked, &dest).map_err(|e| Error::io(&dest, e))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}
