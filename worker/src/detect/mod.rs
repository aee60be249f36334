//! Deterministic detectors that run beside the models: PII rules and the tenant's
//! blocklist. Both work on [`normalize::fold`]ed text (NFKC + lowercase) and report
//! original char offsets.

pub mod blocklist;
pub mod normalize;
pub mod pii;

pub use blocklist::{BlockMatch, Blocklist};
pub use pii::{PiiKind, PiiMatch, find_pii};
