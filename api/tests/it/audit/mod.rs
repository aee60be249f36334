//! The audit trail (issue 14): append-only, the hash chain and its checkpoints, coverage of
//! requests, query and export, retention, step-up, key hygiene.

mod append_only;
mod bench;
mod chain;
mod coverage;
mod keys;
mod query;
mod retention;
mod stepup;

use axum::{
    body::Body,
    http::{Method, Request},
};
use serde_json::Value;

use crate::support::{Harness, Reply};

/// A request with extra headers.
pub async fn call_with(
    h: &Harness,
    method: Method,
    uri: &str,
    bearer: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Body::from(serde_json::to_vec(&json).expect("encode"))
        }
        None => Body::empty(),
    };
    h.send(builder.body(body).expect("request")).await
}

/// `GET /v1/audit/verify` as `bearer` (asserting 200).
pub async fn verify(h: &Harness, bearer: &str) -> Value {
    let reply = h
        .call(Method::GET, "/v1/audit/verify", Some(bearer), None)
        .await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}
