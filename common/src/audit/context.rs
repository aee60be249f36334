//! The request an audit record belongs to. The api's audit layer opens a [`scope`] around
//! every request (request id, client IP, user agent); authentication adds the actor; the
//! route adds its target. [`super::insert`] fills every record written inside the scope
//! from it, so a domain record written deep in a store function (in the transaction of the
//! change it describes) carries the request's context without any handler passing it on.
//! Outside a scope (the worker, background loops) records carry what their caller gives.

use std::{net::IpAddr, sync::Mutex};

use crate::types::TenantId;

/// Who acted, by kind (`actor_kind` of a record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A tenant user (admin, reviewer, guest) with a login token.
    User,
    /// A platform operator.
    Operator,
    /// An API key, or a token exchanged for one.
    ApiKey,
    /// Gatehouse itself: the worker, retention, checkpoints.
    System,
    /// No valid credentials (denied attempts).
    Anonymous,
}

impl ActorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Operator => "operator",
            ActorKind::ApiKey => "api_key",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }

    /// The kind an actor name implies when no request says otherwise.
    pub fn of_actor(actor: &str) -> Self {
        if actor.starts_with("usr_") || actor.starts_with("login:") {
            ActorKind::User
        } else if actor.starts_with("key_") {
            ActorKind::ApiKey
        } else if actor == "anonymous" {
            ActorKind::Anonymous
        } else {
            ActorKind::System
        }
    }
}

/// What a record is about: a type (`job`, `key`, `user`, ...) and its public id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static str,
    pub id: String,
}

/// One request's audit context.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub request_id: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: Option<IpAddr>,
    /// Set by authentication.
    pub actor: Option<String>,
    pub actor_kind: Option<ActorKind>,
    pub tenant: Option<TenantId>,
    /// The route's `{id}`, when it has one.
    pub target: Option<Target>,
    /// A record was written for this request (the layer then writes none on success).
    pub recorded: bool,
    /// A non-success record was written (the layer then writes none on failure either).
    pub recorded_failure: bool,
}

tokio::task_local! {
    static CURRENT: Mutex<Context>;
}

/// Runs `f` with `context` as the current request's.
pub async fn scope<F: std::future::Future>(context: Context, f: F) -> (F::Output, Context) {
    CURRENT
        .scope(Mutex::new(context), async move {
            let out = f.await;
            (out, current().unwrap_or_default())
        })
        .await
}

/// Changes the current context (no-op outside a scope).
pub fn update(change: impl FnOnce(&mut Context)) {
    let _ = CURRENT.try_with(|m| {
        let mut guard = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut guard);
    });
}

/// A copy of the current context, if inside a scope.
pub fn current() -> Option<Context> {
    CURRENT
        .try_with(|m| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn updates_inside_a_scope_are_returned_and_invisible_outside() {
        let (n, ctx) = scope(
            Context {
                request_id: Some("r1".into()),
                ..Context::default()
            },
            async {
                update(|c| c.actor = Some("usr_1".into()));
                assert_eq!(current().and_then(|c| c.request_id).as_deref(), Some("r1"));
                7
            },
        )
        .await;
        assert_eq!(n, 7);
        assert_eq!(ctx.actor.as_deref(), Some("usr_1"));
        assert!(current().is_none());
        update(|c| c.recorded = true);
    }

    #[test]
    fn actor_kinds_follow_the_id_prefix() {
        assert_eq!(ActorKind::of_actor("usr_1"), ActorKind::User);
        assert_eq!(ActorKind::of_actor("login:alice"), ActorKind::User);
        assert_eq!(ActorKind::of_actor("key_1"), ActorKind::ApiKey);
        assert_eq!(ActorKind::of_actor("system:retention"), ActorKind::System);
    }
}
