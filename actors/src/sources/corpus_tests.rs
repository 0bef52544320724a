//! Runs every fixture of `tests/fixtures/corpus/<source>/` through [`super::normalise`] and
//! checks it against the `.expect.json` beside it.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::SourceKind;
use crate::sources::{normalise, ParserOptions};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/corpus");

#[path = "../../../tests/common/expect.rs"]
mod expect;
use expect::check_subset;

fn bodies(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read source dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".json") && !name.ends_with(".expect.json")
        })
        .collect();
    out.sort();
    out
}

#[test]
fn corpus_every_fixture_normalises_to_its_expectation() {
    let opts = ParserOptions::default();
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for kind in SourceKind::ALL {
        let dir = Path::new(CORPUS).join(kind.as_str());
        let files = bodies(&dir);
        assert!(
            !files.is_empty(),
            "no fixtures for {kind} in {}",
            dir.display()
        );
        for body_path in files {
            let name = body_path.display().to_string();
            let body = fs::read_to_string(&body_path).expect("read fixture");
            let expect_path = body_path.with_extension("expect.json");
            let Ok(expect) = fs::read_to_string(&expect_path) else {
                failures.push(format!("{name}: no {}", expect_path.display()));
                continue;
            };
            let body: Value = serde_json::from_str(&body).expect("fixture is JSON");
            let expect: Value = serde_json::from_str(&expect).expect("expect is JSON");
            match normalise(kind, kind.as_str(), &opts, &body) {
                Ok(ev) => {
                    let actual = serde_json::to_value(&ev).expect("serialise");
                    let mut errs = Vec::new();
                    check_subset(&expect, Some(&actual), "event", &mut errs);
                    failures.extend(errs.into_iter().map(|e| format!("{name}: {e}")));
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
            seen.push(name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(seen.len() >= 60, "corpus shrank to {} fixtures", seen.len());
}

/// JSON pointers of every node down to `depth` levels.
fn pointers(v: &Value, at: String, depth: usize, out: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| (k.replace('~', "~0").replace('/', "~1"), x))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (i.to_string(), x))
            .collect(),
        _ => Vec::new(),
    };
    for (key, child) in children {
        let p = format!("{at}/{key}");
        out.push(p.clone());
        pointers(child, p, depth - 1, out);
    }
}

#[test]
fn corpus_fixtures_with_any_field_retyped_never_panic() {
    let opts = ParserOptions::default();
    let replacements = [
        Value::Null,
        serde_json::json!(true),
        serde_json::json!(-1),
        serde_json::json!(1e308),
        serde_json::json!(""),
        serde_json::json!("x"),
        serde_json::json!([1, "a", null, {}]),
        serde_json::json!({"a": [1]}),
    ];
    for kind in SourceKind::ALL {
        for body_path in bodies(&Path::new(CORPUS).join(kind.as_str())) {
            let text = fs::read_to_string(&body_path).expect("read fixture");
            let mut body: Value = serde_json::from_str(&text).expect("fixture is JSON");
            let mut paths = Vec::new();
            pointers(&body, String::new(), 3, &mut paths);
            for p in paths {
                for r in &replacements {
                    let Some(slot) = body.pointer_mut(&p) else {
                        continue;
                    };
                    let original = std::mem::replace(slot, r.clone());
                    // The result does not matter; returning at all does.
                    let _ = normalise(kind, "fuzz", &opts, &body);
                    if let Some(slot) = body.pointer_mut(&p) {
                        *slot = original;
                    }
                }
            }
        }
    }
}

#[test]
fn corpus_subset_check_reports_differences() {
    let actual = serde_json::json!({"kind": "import", "files": [{"path": "/a", "deleted": false}]});
    let mut errs = Vec::new();
    check_subset(
        &serde_json::json!({"kind": "import", "files": [{"path": "/a"}], "download_id": null}),
        Some(&actual),
        "event",
        &mut errs,
    );
    assert!(errs.is_empty(), "{errs:?}");
    check_subset(
        &serde_json::json!({"kind": "upgrade", "files": [], "media": {"title": "x"}}),
        Some(&actual),
        "event",
        &mut errs,
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
}
