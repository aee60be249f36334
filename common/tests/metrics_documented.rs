//! Every metric the code exports is listed in `deploy/README.md` (the operators' reference),
//! and every metric listed there still exists: the list cannot drift from the code.

use std::{collections::BTreeSet, fs, path::Path};

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names passed to `metrics::counter!`/`gauge!`/`histogram!` (the name may sit on the next
/// line after a line break).
fn exported(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    for crate_dir in ["api/src", "worker/src", "common/src"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("read source");
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(rest) = rest.strip_prefix('"') {
                    let name: String = rest.chars().take_while(|c| *c != '"').collect();
                    if name.starts_with("gatehouse_") {
                        names.insert(name);
                    }
                }
            }
        }
    }
    names
}

/// Metric names in the first column of `deploy/README.md`'s tables.
fn documented(root: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(root.join("deploy/README.md")).expect("deploy/README.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("| `gatehouse_"))
        .map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            format!("gatehouse_{name}")
        })
        .collect()
}

#[test]
fn every_exported_metric_is_documented_and_vice_versa() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exported = exported(&root);
    let documented = documented(&root);
    assert!(exported.len() > 20, "found only {exported:?}");
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in deploy/README.md: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(
        stale.is_empty(),
        "in deploy/README.md but not exported: {stale:?}"
    );
}
