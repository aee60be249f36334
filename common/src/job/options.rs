//! What a job asks for, per kind. One type both sides use: the api validates and stores it in
//! `jobs.options`, the worker reads it back from the claim. Unknown fields are refused, so a
//! typo in a request never silently does nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{moderation::Level, types::JobKind};

/// A language a text may be in or translated into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Zh, Lang::En];

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lang::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| format!("unknown language `{s}`"))
    }
}

/// The source language of a translation: a fixed one, or detected per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceLang {
    #[default]
    Auto,
    Zh,
    En,
}

impl SourceLang {
    pub const ALL: [SourceLang; 3] = [SourceLang::Zh, SourceLang::En, SourceLang::Auto];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceLang::Auto => "auto",
            SourceLang::Zh => "zh",
            SourceLang::En => "en",
        }
    }

    /// The fixed language, `None` for `auto`.
    pub fn fixed(self) -> Option<Lang> {
        match self {
            SourceLang::Auto => None,
            SourceLang::Zh => Some(Lang::Zh),
            SourceLang::En => Some(Lang::En),
        }
    }
}

/// `kind: "moderate"`: nothing to choose today (the tenant's policy decides the verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerateOptions {}

/// `kind: "translate"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateOptions {
    #[serde(default)]
    pub source_lang: SourceLang,
    pub target_lang: Lang,
}

/// `kind: "moderate_translate"`: each item is moderated, and only items whose level is at
/// most `max_level` (default `safe`) are translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerateTranslateOptions {
    #[serde(default)]
    pub source_lang: SourceLang,
    pub target_lang: Lang,
    #[serde(default = "safe")]
    pub max_level: Level,
}

fn safe() -> Level {
    Level::Safe
}

impl ModerateTranslateOptions {
    pub fn translate(&self) -> TranslateOptions {
        TranslateOptions {
            source_lang: self.source_lang,
            target_lang: self.target_lang,
        }
    }
}

/// A job's options, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOptions {
    Moderate(ModerateOptions),
    Translate(TranslateOptions),
    ModerateTranslate(ModerateTranslateOptions),
}

#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct OptionsError {
    /// `options` or `options.<name>`.
    pub field: String,
    pub message: String,
}

impl JobOptions {
    pub fn kind(&self) -> JobKind {
        match self {
            JobOptions::Moderate(_) => JobKind::Moderate,
            JobOptions::Translate(_) => JobKind::Translate,
            JobOptions::ModerateTranslate(_) => JobKind::ModerateTranslate,
        }
    }

    /// The options of a `kind` job from their JSON (`None`: none sent).
    pub fn parse(kind: JobKind, raw: Option<serde_json::Value>) -> Result<Self, OptionsError> {
        let raw = raw.unwrap_or_else(|| serde_json::json!({}));
        fn typed<T: serde::de::DeserializeOwned>(
            raw: serde_json::Value,
        ) -> Result<T, OptionsError> {
            serde_path_to_error::deserialize(raw).map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                // A missing field is named in the message, not the path.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split_once('`'))
                    .map(|(name, _)| name.to_string());
                let field = match (path.as_str(), missing) {
                    (_, Some(name)) => format!("options.{name}"),
                    ("" | ".", None) => "options".to_string(),
                    (path, None) => format!("options.{path}"),
                };
                OptionsError { field, message }
            })
        }
        Ok(match kind {
            JobKind::Moderate => JobOptions::Moderate(typed(raw)?),
            JobKind::Translate => JobOptions::Translate(typed(raw)?),
            JobKind::ModerateTranslate => JobOptions::ModerateTranslate(typed(raw)?),
        })
    }

    /// What `jobs.options` holds.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            JobOptions::Moderate(o) => serde_json::to_value(o),
            JobOptions::Translate(o) => serde_json::to_value(o),
            JobOptions::ModerateTranslate(o) => serde_json::to_value(o),
        };
        value.unwrap_or_else(|_| serde_json::json!({}))
    }

    /// The translation a job asks for, if any.
    pub fn translation(&self) -> Option<TranslateOptions> {
        match self {
            JobOptions::Moderate(_) => None,
            JobOptions::Translate(o) => Some(*o),
            JobOptions::ModerateTranslate(o) => Some(o.translate()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_round_trip_and_refuse_typos() {
        let t = JobOptions::parse(
            JobKind::Translate,
            Some(json!({"source_lang": "zh", "target_lang": "en"})),
        )
        .expect("valid");
        assert_eq!(
            t.to_json(),
            json!({"source_lang": "zh", "target_lang": "en"})
        );
        let back = JobOptions::parse(JobKind::Translate, Some(t.to_json())).expect("again");
        assert_eq!(back, t);
        let auto = JobOptions::parse(JobKind::Translate, Some(json!({"target_lang": "zh"})))
            .expect("auto");
        assert_eq!(
            auto.translation().map(|o| o.source_lang),
            Some(SourceLang::Auto)
        );
        let err =
            JobOptions::parse(JobKind::Translate, Some(json!({"target": "en"}))).expect_err("typo");
        assert_eq!(err.field, "options.target");
        let err = JobOptions::parse(JobKind::Translate, Some(json!({"source_lang": "zh"})))
            .expect_err("missing");
        assert_eq!(err.field, "options.target_lang");
        let err = JobOptions::parse(JobKind::Translate, Some(json!({"target_lang": "fr"})))
            .expect_err("language");
        assert!(err.message.contains("fr"), "{err}");
        assert_eq!(err.field, "options.target_lang");
        assert!(JobOptions::parse(JobKind::Moderate, None).is_ok());
        assert!(JobOptions::parse(JobKind::Moderate, Some(json!({"x": 1}))).is_err());
        let chained = JobOptions::parse(
            JobKind::ModerateTranslate,
            Some(json!({"target_lang": "en"})),
        )
        .expect("chained");
        assert_eq!(
            chained.to_json(),
            json!({"source_lang": "auto", "target_lang": "en", "max_level": "safe"})
        );
    }
}
