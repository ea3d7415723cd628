//! `data fetch` against an HTTP server on 127.0.0.1 that serves files made by the test.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use cnnsplitter::data::fetch::{Remote, RemoteFile, fetch, md5_file};
use cnnsplitter::progress::Silent;
use common::formats::*;

/// A tiny HTTP/1.1 server: serves `files` by name, honours `Range: bytes=N-`, logs requests.
struct Server {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range_start = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range_start = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            log2.lock()
                .unwrap()
                .push(format!("{path}{}", range_start.map(|s| format!(" from {s}")).unwrap_or_default()));
            let response = match files.get(&path) {
                Some(body) => match range_start {
                    Some(s) if s < body.len() => {
                        let part = &body[s..];
                        let head = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{}\r\nConnection: close\r\n\r\n",
                            part.len(),
                            body.len() - 1,
                            body.len()
                        );
                        [head.into_bytes(), part.to_vec()].concat()
                    }
                    Some(_) => {
                        b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
                    }
                    None => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        [head.into_bytes(), body.clone()].concat()
                    }
                },
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    Server { url, log }
}

fn md5_of(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, bytes).unwrap();
    md5_file(&p).unwrap()
}

fn mnist_files() -> HashMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    write_mnist(dir.path(), 30, true);
    std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn remote_for(server: &Server, files: &HashMap<String, Vec<u8>>, folder: &str) -> Remote {
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    Remote {
        dataset: "mnist".into(),
        base_url: server.url.clone(),
        files: names
            .into_iter()
            .map(|n| RemoteFile { name: n.clone(), md5: md5_of(&files[n]), folder: folder.into(), unpacks_to: None })
            .collect(),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".partial") || name.starts_with(".unpacking") {
            found.push(name);
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn fetch_downloads_checks_and_then_skips() {
    let files = mnist_files();
    let server = serve(files.clone());
    let remote = remote_for(&server, &files, "mnist");
    let dir = tempfile::tempdir().unwrap();
    let first = fetch(&remote, dir.path(), &Silent).unwrap();
    assert!(first.iter().all(|o| o.action == "downloaded"), "{first:?}");
    let raw = cnnsplitter::data::open(dir.path()).unwrap();
    assert_eq!(raw.split("test").unwrap().len(), 30);
    let requests = server.log.lock().unwrap().len();
    let second = fetch(&remote, dir.path(), &Silent).unwrap();
    assert!(second.iter().all(|o| o.action == "already there"), "{second:?}");
    assert_eq!(server.log.lock().unwrap().len(), requests, "nothing is downloaded again");
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let files = mnist_files();
    let server = serve(files.clone());
    let remote = remote_for(&server, &files, "");
    let dir = tempfile::tempdir().unwrap();
    let name = "t10k-images-idx3-ubyte.gz";
    let body = &files[name];
    std::fs::write(dir.path().join(format!("{name}.partial")), &body[..body.len() / 2]).unwrap();
    let outcomes = fetch(&remote, dir.path(), &Silent).unwrap();
    let o = outcomes.iter().find(|o| o.name == name).unwrap();
    assert_eq!(o.action, "resumed");
    assert_eq!(o.bytes as usize, body.len() - body.len() / 2);
    assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), body);
    assert!(server.log.lock().unwrap().contains(&format!("{name} from {}", body.len() / 2)));
}

#[test]
fn a_checksum_mismatch_is_an_error_and_leaves_nothing_behind() {
    let files = mnist_files();
    let server = serve(files.clone());
    let mut remote = remote_for(&server, &files, "mnist");
    remote.files[0].md5 = "0123456789abcdef0123456789abcdef".into();
    let dir = tempfile::tempdir().unwrap();
    let err = fetch(&remote, dir.path(), &Silent).unwrap_err().to_string();
    assert!(err.contains("checksum mismatch") && err.contains(&remote.files[0].name), "{err}");
    assert!(!dir.path().join("mnist").join(&remote.files[0].name).exists());
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[test]
fn archives_are_unpacked_once() {
    // A cifar-10-binary.tar.gz made here, holding cifar-10-batches-bin/.
    let src = tempfile::tempdir().unwrap();
    write_cifar10_binary(&src.path().join("cifar-10-batches-bin"));
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    tar.append_dir_all("cifar-10-batches-bin", src.path().join("cifar-10-batches-bin")).unwrap();
    let archive = tar.into_inner().unwrap().finish().unwrap();
    let name = "cifar-10-binary.tar.gz".to_string();
    let server = serve(HashMap::from([(name.clone(), archive.clone())]));
    let remote = Remote {
        dataset: "cifar10".into(),
        base_url: server.url.clone(),
        files: vec![RemoteFile {
            name,
            md5: md5_of(&archive),
            folder: String::new(),
            unpacks_to: Some("cifar-10-batches-bin".into()),
        }],
    };
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(fetch(&remote, dir.path(), &Silent).unwrap()[0].action, "downloaded");
    let raw = cnnsplitter::data::open(dir.path()).unwrap();
    assert_eq!(raw.split("train").unwrap().len(), 10);
    assert_eq!(fetch(&remote, dir.path(), &Silent).unwrap()[0].action, "already unpacked");
    assert!(leftovers(dir.path()).is_empty());

    // A broken archive is an error naming it, and leaves no half-unpacked folder.
    let broken = archive[..archive.len() / 3].to_vec();
    let server = serve(HashMap::from([("cifar-10-binary.tar.gz".to_string(), broken.clone())]));
    let remote = Remote {
        base_url: server.url.clone(),
        files: vec![RemoteFile { md5: md5_of(&broken), ..remote.files[0].clone() }],
        ..remote
    };
    let dir = tempfile::tempdir().unwrap();
    let err = fetch(&remote, dir.path(), &Silent).unwrap_err().to_string();
    assert!(err.contains("cifar-10-binary.tar.gz"), "{err}");
    assert!(!dir.path().join("cifar-10-batches-bin").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn an_unreachable_server_fails_fast_with_advice() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed again
    let files = mnist_files();
    let remote =
        Remote { base_url: format!("http://127.0.0.1:{port}"), ..remote_for(&serve(files.clone()), &files, "") };
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let err = fetch(&remote, dir.path(), &Silent).unwrap_err().to_string();
    assert!(err.contains("offline") && err.contains("CNNSPLITTER_DATA_URL"), "{err}");
    assert!(t.elapsed().as_secs() < 10);
}
