//! What the api and the worker share: configuration, domain types, database and queue
//! access, telemetry and shutdown. No axum and no ort in here.

pub mod audit;
pub mod clock;
pub mod config;
pub mod db;
pub mod fault;
pub mod job;
pub mod models;
pub mod moderation;
pub mod objects;
pub mod queue;
pub mod shutdown;
pub mod telemetry;
pub mod text;
pub mod trace;
pub mod types;
pub mod webhook;

#[cfg(feature = "testkit")]
pub mod testkit;
