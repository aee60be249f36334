//! The Grafana dashboards in `deploy/grafana/dashboards/`: every panel has queries, every
//! query parses as PromQL (`promtool check rules` on a rule file made of them) and names only
//! metrics the code exports (those `metrics_documented.rs` ties to `deploy/README.md`), and
//! the alerting rules still check and pass their unit tests. promtool comes from PATH or from
//! `bash scripts/promtool.sh` (which `make test` runs).

mod support {
    pub mod metric_names;
}

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use support::metric_names::{documented, exported, histograms};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Metrics that are not Gatehouse's but may be queried: Prometheus' own scrape health.
const EXTERNAL: [&str; 1] = ["up"];

fn promtool() -> PathBuf {
    let local = root().join(".cache/prometheus/usr/bin/promtool");
    if local.exists() {
        return local;
    }
    let on_path = Command::new("promtool").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "promtool not found: run `bash scripts/promtool.sh` (make test does)"
    );
    PathBuf::from("promtool")
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// Grafana's interval variables, replaced by what Grafana would put there.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers
/// (`{…}`), ranges (`[…]`) and grouping clauses (`by (…)`), that are not keywords and not
/// called as functions or aggregations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
    ];
    // Aggregations may be followed by their grouping (`sum by (x) (…)`), not by `(`.
    const AGGREGATIONS: [&str; 13] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut grouping = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            // A number (1e-9, 0.95) or a duration: skip its letters too.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                grouping = called
                    && matches!(
                        word.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
            } else if !called && !AGGREGATIONS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else if c == '(' && grouping {
            // A grouping clause's label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            grouping = false;
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_lexer_finds_metric_names_only() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(gatehouse_x_seconds_bucket{route!~"/a|b"}[5m]))) / on (instance) group_left (pod) clamp_min(up, 1e-9) > bool 2"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["gatehouse_x_seconds_bucket".to_string(), "up".to_string()])
    );
}

#[test]
fn every_panel_query_parses_and_names_exported_metrics() {
    let root = root();
    let exported = exported(&root);
    let documented = documented(&root);
    let histograms = histograms(&root);
    let known = |name: &str| -> bool {
        if EXTERNAL.contains(&name) {
            return true;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| histograms.contains(*base));
        let name = base.unwrap_or(name);
        exported.contains(name) && documented.contains(name)
    };
    let dir = root.join("deploy/grafana/dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("deploy/grafana/dashboards")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {}", dir.display());

    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    let mut seen = BTreeSet::new();
    for file in &files {
        let dashboard: Value =
            serde_json::from_str(&fs::read_to_string(file).expect("read")).expect("JSON");
        assert!(dashboard["uid"].is_string(), "{}: no uid", file.display());
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            let kind = panel["type"].as_str().unwrap_or("");
            if matches!(kind, "row" | "text") {
                continue;
            }
            let targets = panel["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(!targets.is_empty(), "panel `{title}` has no queries");
            for target in targets {
                let expr = target["expr"]
                    .as_str()
                    .filter(|e| !e.trim().is_empty())
                    .unwrap_or_else(|| panic!("panel `{title}`: a query without `expr`"));
                let expr = expand(expr);
                assert!(
                    !expr.contains('$'),
                    "panel `{title}`: unknown variable in {expr}"
                );
                for name in metric_names(&expr) {
                    assert!(
                        known(&name),
                        "panel `{title}` queries `{name}`, which the code does not export (or deploy/README.md does not list)"
                    );
                    seen.insert(name);
                }
                queries += 1;
                rules.push_str(&format!(
                    "      - record: dashboard:query_{queries}\n        expr: {}\n",
                    serde_json::to_string(&expr).expect("quote")
                ));
            }
        }
    }
    assert!(queries > 20, "only {queries} queries");
    assert!(seen.len() > 20, "only {} metrics shown", seen.len());

    let dir = std::env::temp_dir().join(format!("gatehouse-dashboard-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("dashboard-queries.yml");
    fs::write(&file, &rules).expect("write rules");
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let _ = fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool rejects a query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerting_rules_check_and_pass_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
