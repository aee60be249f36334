//! Identity building blocks: JWT issuance and verification, the signing keys, password
//! hashing, login throttling. `auth.rs` turns them into a `Principal`; `policy.rs` decides what
//! it may do.

pub mod jwt;
pub mod password;
mod signing_keys;
pub mod stepup;
pub mod throttle;
