//! Every metric the code exports is listed in `deploy/README.md` (the operators' reference),
//! and every metric listed there still exists: the list cannot drift from the code.

mod support {
    pub mod metric_names;
}

use std::path::Path;

use support::metric_names::{documented, exported};

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
