//! Atomic writes: a failed write leaves no temporary file or folder behind.

use cnnsplitter::files::{read_jsonl, write_atomic, write_dir_atomic, write_jsonl};

#[test]
fn a_failed_atomic_write_leaves_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    // The target is a non-empty folder: the temporary file is written, the rename fails.
    let target = tmp.path().join("taken");
    std::fs::create_dir_all(target.join("inside")).unwrap();
    assert!(write_atomic(&target, b"data").is_err());
    assert!(!tmp.path().join("taken.partial").exists(), "the temporary file was removed");
    // A working write replaces the file whole.
    let file = tmp.path().join("f.txt");
    write_atomic(&file, b"one").unwrap();
    write_atomic(&file, b"two").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"two");
    assert!(!tmp.path().join("f.txt.partial").exists());
}

#[test]
fn a_failed_folder_write_leaves_nothing_and_a_good_one_lands_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let err = write_dir_atomic(&out, |dir| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("half"), b"x").unwrap();
        Err(cnnsplitter::Error::Invalid("fails half-way".into()))
    });
    assert!(err.is_err());
    assert!(!out.exists() && !tmp.path().join("out.partial").exists());
    write_dir_atomic(&out, |dir| {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("a"), b"1").map_err(|e| cnnsplitter::Error::io(dir, e))
    })
    .unwrap();
    assert_eq!(std::fs::read(out.join("a")).unwrap(), b"1");
    assert!(!tmp.path().join("out.partial").exists());
}

#[test]
fn jsonl_round_trips_and_bad_lines_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("log.jsonl");
    let rows = vec![serde_json::json!({"a": 1}), serde_json::json!({"a": 2})];
    write_jsonl(&path, &rows).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
    assert_eq!(read_jsonl::<serde_json::Value>(&path).unwrap(), rows);
    std::fs::write(&path, "{\"a\":1}\nnot json\n").unwrap();
    let err = read_jsonl::<serde_json::Value>(&path).unwrap_err().to_string();
    assert!(err.contains("log.jsonl") && err.contains("line 2"), "{err}");
}
