//! The metric names the code exports and the ones `deploy/README.md` documents (shared by
//! `metrics_documented.rs` and `dashboard.rs`).

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
pub fn exported(root: &Path) -> BTreeSet<String> {
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
pub fn documented(root: &Path) -> BTreeSet<String> {
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

/// The documented metrics whose type (the table's second column) is `histogram`: they are
/// queried as `<name>_bucket`, `_sum` and `_count`.
#[allow(dead_code)] // used by dashboard.rs only
pub fn histograms(root: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(root.join("deploy/README.md")).expect("deploy/README.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('`')?;
            let kind = rest.split('|').nth(1)?.trim();
            let name = name.split('{').next()?;
            (kind == "histogram" && name.starts_with("gatehouse_")).then(|| name.to_string())
        })
        .collect()
}
