//! Daily quotas per tenant: items and characters, in total and per kind, counted per UTC day
//! in `quota_usage`. A job **reserves** its items and characters in the transaction that
//! accepts it (under a lock on the tenant's row, so concurrent submissions on any number of
//! api replicas are counted exactly), and the chunk completions **refund** what failed; a
//! cancel refunds what never ran. A refused submission stores nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::types::JobKind;

/// `Some(None)` for a key sent as `null`, `None` for a key not sent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Limits of one scope (all kinds, or one kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DailyLimits {
    /// Absent: the default; `null`: unlimited.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily_items: Option<Option<i64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily_characters: Option<Option<i64>>,
}

/// A tenant's quota settings as stored (`tenants.quotas`) and as an operator sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    #[serde(flatten)]
    pub total: DailyLimits,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::objects::object_values"
    )]
    pub per_kind: BTreeMap<JobKind, DailyLimits>,
}

impl QuotaSettings {
    /// `self` with `change`'s keys laid over it (a key sent as `null` means unlimited).
    pub fn merged(&self, change: &QuotaSettings) -> QuotaSettings {
        let lay = |base: DailyLimits, over: DailyLimits| DailyLimits {
            daily_items: over.daily_items.or(base.daily_items),
            daily_characters: over.daily_characters.or(base.daily_characters),
        };
        let mut per_kind = self.per_kind.clone();
        for (kind, limits) in &change.per_kind {
            let base = per_kind.get(kind).copied().unwrap_or_default();
            per_kind.insert(*kind, lay(base, *limits));
        }
        QuotaSettings {
            total: lay(self.total, change.total),
            per_kind,
        }
    }

    /// A negative limit is refused (`field`, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let check = |field: String, value: Option<Option<i64>>| match value {
            Some(Some(n)) if n < 0 => Err((field, "must be a non-negative integer or null".into())),
            _ => Ok(()),
        };
        check("quotas.daily_items".into(), self.total.daily_items)?;
        check(
            "quotas.daily_characters".into(),
            self.total.daily_characters,
        )?;
        for (kind, l) in &self.per_kind {
            check(format!("quotas.per_kind.{kind}.daily_items"), l.daily_items)?;
            check(
                format!("quotas.per_kind.{kind}.daily_characters"),
                l.daily_characters,
            )?;
        }
        Ok(())
    }
}

/// The operator's defaults (`GATEHOUSE_DEFAULT_DAILY_ITEMS`, `..._CHARACTERS`; `None` =
/// unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaDefaults {
    pub daily_items: Option<i64>,
    pub daily_characters: Option<i64>,
}

/// One quota in force: its name (`daily_items`, `translate.daily_characters`), the kind it is
/// limited to (none: all kinds), what it counts, and its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quota {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<JobKind>,
    pub counts: Measure,
    /// `None`: unlimited.
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    Items,
    Characters,
}

/// The quotas in force for a tenant: its settings over the operator's defaults.
pub fn effective(settings: &QuotaSettings, defaults: QuotaDefaults) -> Vec<Quota> {
    let mut quotas = vec![
        Quota {
            name: "daily_items".into(),
            kind: None,
            counts: Measure::Items,
            limit: settings.total.daily_items.unwrap_or(defaults.daily_items),
        },
        Quota {
            name: "daily_characters".into(),
            kind: None,
            counts: Measure::Characters,
            limit: settings
                .total
                .daily_characters
                .unwrap_or(defaults.daily_characters),
        },
    ];
    for (kind, limits) in &settings.per_kind {
        if let Some(limit) = limits.daily_items {
            quotas.push(Quota {
                name: format!("{kind}.daily_items"),
                kind: Some(*kind),
                counts: Measure::Items,
                limit,
            });
        }
        if let Some(limit) = limits.daily_characters {
            quotas.push(Quota {
                name: format!("{kind}.daily_characters"),
                kind: Some(*kind),
                counts: Measure::Characters,
                limit,
            });
        }
    }
    quotas
}

/// Whether a `job` kind's use counts toward a quota of the `quota` kind: its own, and (for a
/// chained `moderate_translate` job) those of each step it runs.
pub fn counts_toward(job: JobKind, quota: JobKind) -> bool {
    job == quota || job.scopes().contains(&quota.as_str())
}

/// A day's use, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayUsage {
    pub by_kind: BTreeMap<JobKind, (i64, i64)>,
}

impl DayUsage {
    /// What `quota` has counted so far.
    pub fn used(&self, quota: &Quota) -> i64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| quota.kind.is_none_or(|q| counts_toward(**k, q)))
            .map(|(_, (items, chars))| match quota.counts {
                Measure::Items => *items,
                Measure::Characters => *chars,
            })
            .sum()
    }
}

/// One quota's state: what it allows, what is used, what is left, when it resets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaState {
    #[serde(flatten)]
    pub quota: Quota,
    pub used: i64,
    /// `None`: unlimited.
    pub remaining: Option<i64>,
    pub resets_at: DateTime<Utc>,
}

/// The cost of a submission: what it would reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub items: i64,
    pub characters: i64,
}

/// Refused: `quota` would be exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaExceeded {
    pub state: QuotaState,
    pub requested: i64,
}

/// The UTC day `now` falls in, and when it ends.
pub fn day_of(now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let day = now.date_naive();
    let next = day
        .checked_add_days(Days::new(1))
        .unwrap_or(day)
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    (day, next)
}

/// The states of `quotas` given today's `usage`.
pub fn states(quotas: &[Quota], usage: &DayUsage, resets_at: DateTime<Utc>) -> Vec<QuotaState> {
    quotas
        .iter()
        .map(|q| {
            let used = usage.used(q);
            QuotaState {
                quota: q.clone(),
                used,
                remaining: q.limit.map(|l| (l - used).max(0)),
                resets_at,
            }
        })
        .collect()
}

/// The first quota `cost` of a `kind` job would exceed, if any.
pub fn check(
    quotas: &[Quota],
    usage: &DayUsage,
    kind: JobKind,
    cost: Cost,
    resets_at: DateTime<Utc>,
) -> Result<(), QuotaExceeded> {
    for state in states(quotas, usage, resets_at) {
        if state.quota.kind.is_some_and(|q| !counts_toward(kind, q)) {
            continue;
        }
        let requested = match state.quota.counts {
            Measure::Items => cost.items,
            Measure::Characters => cost.characters,
        };
        if let Some(limit) = state.quota.limit
            && state.used + requested > limit
        {
            return Err(QuotaExceeded { state, requested });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_tell_unset_from_unlimited_and_merge() {
        let s: QuotaSettings = serde_json::from_value(json!({
            "daily_items": 100, "daily_characters": null,
            "per_kind": {"translate": {"daily_characters": 5000}}
        }))
        .expect("settings");
        assert_eq!(s.total.daily_items, Some(Some(100)));
        assert_eq!(s.total.daily_characters, Some(None));
        let defaults = QuotaDefaults {
            daily_items: Some(10),
            daily_characters: Some(20),
        };
        let q = effective(&s, defaults);
        assert_eq!(q[0].limit, Some(100));
        assert_eq!(q[1].limit, None, "null is unlimited, not the default");
        assert_eq!(q[2].name, "translate.daily_characters");
        assert_eq!(
            effective(&QuotaSettings::default(), defaults)[0].limit,
            Some(10)
        );
        let merged = s.merged(&serde_json::from_value(json!({"daily_items": null})).expect("c"));
        assert_eq!(merged.total.daily_items, Some(None));
        assert_eq!(merged.per_kind.len(), 1);
        assert!(
            serde_json::from_value::<QuotaSettings>(json!({"daily_itms": 1})).is_err(),
            "typos are refused"
        );
        let negative: QuotaSettings =
            serde_json::from_value(json!({"daily_items": -1})).expect("parses");
        assert!(negative.validate().is_err());
    }

    #[test]
    fn a_chained_job_counts_toward_both_steps() {
        assert!(counts_toward(
            JobKind::ModerateTranslate,
            JobKind::Translate
        ));
        assert!(counts_toward(JobKind::ModerateTranslate, JobKind::Moderate));
        assert!(!counts_toward(
            JobKind::Translate,
            JobKind::ModerateTranslate
        ));
        assert!(!counts_toward(JobKind::Moderate, JobKind::Translate));
    }

    #[test]
    fn checks_count_every_kind_against_totals_and_one_kind_against_its_own() {
        let quotas = effective(
            &serde_json::from_value(json!({
                "daily_items": 10, "per_kind": {"translate": {"daily_characters": 100}}
            }))
            .expect("settings"),
            QuotaDefaults::default(),
        );
        let usage = DayUsage {
            by_kind: BTreeMap::from([(JobKind::Moderate, (6, 500)), (JobKind::Translate, (2, 90))]),
        };
        let (_, resets) = day_of(Utc::now());
        let small = Cost {
            items: 2,
            characters: 5,
        };
        assert!(check(&quotas, &usage, JobKind::Moderate, small, resets).is_ok());
        let err = check(
            &quotas,
            &usage,
            JobKind::Translate,
            Cost {
                items: 1,
                characters: 20,
            },
            resets,
        )
        .expect_err("characters");
        assert_eq!(err.state.quota.name, "translate.daily_characters");
        assert_eq!(err.state.remaining, Some(10));
        let err = check(
            &quotas,
            &usage,
            JobKind::Moderate,
            Cost {
                items: 3,
                characters: 1,
            },
            resets,
        )
        .expect_err("items");
        assert_eq!((err.state.used, err.state.remaining), (8, Some(2)));
    }

    #[test]
    fn days_are_utc_and_reset_at_midnight() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T23:59:59Z")
            .expect("time")
            .with_timezone(&Utc);
        let (day, resets) = day_of(now);
        assert_eq!(day.to_string(), "2026-12-03");
        assert_eq!(resets.to_rfc3339(), "2026-12-04T00:00:00+00:00");
    }
}
