//! Domain types shared by the api and the worker: prefixed public ids, job kinds and states.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, sqlx::Type)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, time-ordered id (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let rest = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or(IdError { expected: $prefix })?;
                if rest.len() != 32 {
                    return Err(IdError { expected: $prefix });
                }
                Uuid::try_parse(rest)
                    .map(Self)
                    .map_err(|_| IdError { expected: $prefix })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        /// In the OpenAPI description: a string `<prefix>_<32 hex digits>`.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some(concat!("^", $prefix, "_[0-9a-f]{32}$")))
                    .examples([concat!($prefix, "_0193a1b2c3d47e8f9a0b1c2d3e4f5a6b")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A job: `job_…`.
    JobId,
    "job"
);
prefixed_id!(
    /// A tenant: `ten_…`.
    TenantId,
    "ten"
);
prefixed_id!(
    /// An API key: `key_…`.
    KeyId,
    "key"
);

prefixed_id!(
    /// A file (uploaded, or a batch's output): `file_…`.
    FileId,
    "file"
);
prefixed_id!(
    /// An OpenAI-style batch: `batch_…`.
    BatchId,
    "batch"
);

prefixed_id!(
    /// A user (tenant member or platform operator): `usr_…`.
    UserId,
    "usr"
);

prefixed_id!(
    /// A tenant's webhook endpoint: `ep_…`.
    EndpointId,
    "ep"
);
prefixed_id!(
    /// A webhook message (one event; its id is the `webhook-id` header): `msg_…`.
    MessageId,
    "msg"
);
prefixed_id!(
    /// One HTTP attempt to deliver a webhook message: `atmpt_…`.
    AttemptId,
    "atmpt"
);

/// What a principal is, for authorization. `Service` is an API key (or a token derived from
/// one); the others are users. `Superadmin` is a platform operator bound to no tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Superadmin,
    Admin,
    Reviewer,
    Guest,
    Service,
}

impl Role {
    pub const USER_ROLES: [Role; 4] = [Role::Superadmin, Role::Admin, Role::Reviewer, Role::Guest];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superadmin => "superadmin",
            Role::Admin => "admin",
            Role::Reviewer => "reviewer",
            Role::Guest => "guest",
            Role::Service => "service",
        }
    }

    /// Ordering of tenant roles for "cannot raise your own role": guest < reviewer < admin.
    pub fn rank(self) -> u8 {
        match self {
            Role::Guest => 0,
            Role::Service | Role::Reviewer => 1,
            Role::Admin => 2,
            Role::Superadmin => 3,
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Role::Superadmin,
            Role::Admin,
            Role::Reviewer,
            Role::Guest,
            Role::Service,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("unknown role `{s}`"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes a tenant may use and an API key may hold: one per job kind, `webhooks`
/// (managing the tenant's webhook endpoints with a key) and [`ADMIN_SCOPE`]. A new tenant
/// grants `moderate` only, unless the operator says otherwise.
pub const SCOPES: [&str; 4] = ["moderate", "translate", "webhooks", ADMIN_SCOPE];

/// The scope that makes an API key act as an admin of its tenant (and exempts it from
/// step-up). Never granted by default: an operator adds it to a tenant's scopes, then a tenant
/// admin — with a fresh login — creates a key holding it.
pub const ADMIN_SCOPE: &str = "admin";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid `{expected}_…` id")]
pub struct IdError {
    pub expected: &'static str,
}

/// What a job asks the workers to do. Also the queue routing key.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Moderate,
    Translate,
    /// Moderate each item, then translate those at or below a level.
    ModerateTranslate,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [
        JobKind::Moderate,
        JobKind::Translate,
        JobKind::ModerateTranslate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Moderate => "moderate",
            JobKind::Translate => "translate",
            JobKind::ModerateTranslate => "moderate_translate",
        }
    }

    /// The scopes a principal needs to submit this kind.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            JobKind::Moderate => &["moderate"],
            JobKind::Translate => &["translate"],
            JobKind::ModerateTranslate => &["moderate", "translate"],
        }
    }

    /// Whether a worker needs a translation model for this kind.
    pub fn needs_translation(self) -> bool {
        matches!(self, JobKind::Translate | JobKind::ModerateTranslate)
    }
}

impl FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown job kind `{s}`"))
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    /// Cancel asked; in-flight chunks are finishing.
    Cancelling,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelling => "cancelling",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Completed,
            JobStatus::Failed,
            JobStatus::Cancelling,
            JobStatus::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("unknown job status `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_carry_their_prefix() {
        let id = JobId::new();
        let text = id.to_string();
        assert!(text.starts_with("job_"));
        assert_eq!(text.len(), 4 + 32);
        assert_eq!(text.parse::<JobId>(), Ok(id));
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{text}\""));
    }

    #[test]
    fn ids_with_the_wrong_prefix_or_shape_are_rejected() {
        let job = JobId::new().to_string();
        assert!(job.parse::<TenantId>().is_err());
        assert!("job_".parse::<JobId>().is_err());
        assert!(
            "job_not-a-uuid-at-all-xxxxxxxxxxxxxx"
                .parse::<JobId>()
                .is_err()
        );
        let hyphenated = format!("job_{}", uuid::Uuid::now_v7());
        assert!(hyphenated.parse::<JobId>().is_err());
    }

    #[test]
    fn kinds_parse_from_their_wire_names() {
        assert_eq!("moderate".parse::<JobKind>(), Ok(JobKind::Moderate));
        assert_eq!("translate".parse::<JobKind>(), Ok(JobKind::Translate));
        assert!("translate-all-the-things".parse::<JobKind>().is_err());
    }
}
