//! The api's Postgres access, one module per table family.

pub mod audit;
pub mod files;
pub mod jobs;
pub mod key_rotation;
pub mod keys;
pub mod moderation_policies;
pub mod results;
pub mod signing_keys;
pub mod tenants;
pub mod usage;
pub mod users;
pub mod webhook_endpoints;
pub mod webhook_messages;
