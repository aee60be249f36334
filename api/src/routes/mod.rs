//! Every route, one module per resource, merged here.

pub mod health;
pub mod jobs;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().merge(health::router()).merge(jobs::router())
}
