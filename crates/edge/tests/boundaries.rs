//! The architecture's import rules, checked on the source: the workers decode, call the
//! engine and respond — they never compose SQL of their own (the test hooks aside), and no
//! SHA-256 or HMAC is written by hand anywhere.

// Helpers outside `#[test]` functions; a panic there is the failure report.
#![allow(clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn workers_import_nothing_from_the_d1_module_outside_the_test_hooks() {
    let mut offenders = Vec::new();
    for worker in ["orchestrator", "consumer", "poller"] {
        let mut files = Vec::new();
        rust_files(&crates_dir().join(worker).join("src"), &mut files);
        for file in files.iter().filter(|f| !f.ends_with("test_hooks.rs")) {
            let text = fs::read_to_string(file).expect("a readable source file");
            if text.contains("baton_edge::d1") {
                offenders.push(file.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "these worker files reach into baton_edge::d1: {offenders:?}");
}

#[test]
fn no_hand_written_sha256_round_constants_anywhere() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    // The first SHA-256 round constant: any hand-written compression function carries it.
    let constant = format!("0x{:x}", 1_116_352_408u32);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| fs::read_to_string(f).is_ok_and(|t| t.to_lowercase().contains(&constant)))
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "hand-written SHA-256 in {offenders:?}");
}
