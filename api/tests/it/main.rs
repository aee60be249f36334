//! One integration-test binary: the api app, the real worker, real Postgres, real RabbitMQ
//! and the real ONNX model. Each test has its own database and queue prefix.

mod audit;
mod authorization;
mod bad_input;
mod bulk;
mod capacity;
mod cli;
mod connections;
mod delivery_faults;
mod durability;
mod hardening;
mod identity;
mod identity_blocks;
mod isolation;
mod job_contract;
mod jobs;
mod jwt;
mod jwt_tokens;
mod moderation;
mod openai_interop;
mod openapi;
mod support;
mod sweep;
mod translate;
mod webhooks;
