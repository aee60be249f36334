//! The api's Postgres access, one module per table family.

pub mod jobs;
pub mod keys;
pub mod tenants;
