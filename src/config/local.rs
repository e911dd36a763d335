//! The `[local_answers]` section of `proxy.toml`: how local answers (`cache.local_answers`) rank
//! the memory mirror. Without `embeddings_url` they rank lexically; with it, by the cosine of
//! embeddings from an OpenAI-compatible endpoint (`POST …/embeddings`, the one memU itself is
//! configured with, or a local one), falling back to the lexical ranking for whatever has no
//! vector in time. Its settings struct with defaults, the typed [`EmbeddingsConfig`] it becomes,
//! and the `validate` that checks it, as every section has them.

use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};

use super::problems::Problems;

/// `[local_answers]`: how the mirror is ranked for a local answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalAnswersSettings {
    /// An OpenAI-compatible embeddings endpoint, the whole URL
    /// (`http://127.0.0.1:8090/v1/embeddings`). Unset: lexical ranking only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embeddings_url: Option<String>,
    /// The `model` each embeddings request names.
    pub embeddings_model: String,
    /// The environment variable holding the endpoint's bearer key (the key itself is never in
    /// the file). Unset or empty variable: no `Authorization` header.
    pub embeddings_key_env: String,
    /// Longest wait for one embeddings call. A query's vector is used only if it arrives within
    /// the read's own budget; items without a vector rank lexically meanwhile.
    pub embeddings_timeout_ms: u64,
}

impl Default for LocalAnswersSettings {
    fn default() -> Self {
        Self {
            embeddings_url: None,
            embeddings_model: "text-embedding-3-small".into(),
            embeddings_key_env: "OPENAI_API_KEY".into(),
            embeddings_timeout_ms: 2_000,
        }
    }
}

/// The embeddings endpoint, when configured.
#[derive(Debug, Clone)]
pub struct EmbeddingsConfig {
    pub url: Uri,
    pub model: String,
    pub key_env: String,
    pub timeout: Duration,
}

impl LocalAnswersSettings {
    /// `None` both when embeddings are off and when a value is bad (then reported in `problems`).
    /// `local_answers` is `cache.local_answers`: embeddings without local answers do nothing.
    pub(super) fn validate(
        &self,
        local_answers: bool,
        problems: &mut Problems,
    ) -> Option<EmbeddingsConfig> {
        let before = problems.len();
        let url = self.embeddings_url.as_deref().and_then(|url| {
            let parsed = url.parse::<Uri>().ok().filter(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
            });
            if parsed.is_none() {
                problems.push(
                    "local_answers.embeddings_url",
                    "must be an http:// or https:// URL, e.g. http://127.0.0.1:8090/v1/embeddings",
                );
            }
            problems.check(
                local_answers,
                "local_answers.embeddings_url",
                "does nothing unless cache.local_answers = true",
            );
            parsed
        });
        problems.check(
            !self.embeddings_model.trim().is_empty(),
            "local_answers.embeddings_model",
            "must not be empty",
        );
        problems.greater_than_0(
            self.embeddings_timeout_ms,
            "local_answers.embeddings_timeout_ms",
        );
        problems.check(
            self.embeddings_timeout_ms <= 60_000,
            "local_answers.embeddings_timeout_ms",
            "must not exceed 60000",
        );
        let url = url?;
        (problems.len() == before).then(|| EmbeddingsConfig {
            url,
            model: self.embeddings_model.clone(),
            key_env: self.embeddings_key_env.clone(),
            timeout: Duration::from_millis(self.embeddings_timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, Settings};

    fn problems(tweak: impl FnOnce(&mut Settings)) -> Vec<String> {
        let mut settings = Settings::default();
        settings.cache.local_answers = true;
        tweak(&mut settings);
        match settings.validate() {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn an_embeddings_url_is_checked_and_needs_local_answers() {
        let url = |u: &str| Some(u.to_owned());
        assert!(problems(
            |s| s.local_answers.embeddings_url = url("http://127.0.0.1:1/v1/embeddings")
        )
        .is_empty());
        let bad = problems(|s| s.local_answers.embeddings_url = url("127.0.0.1/v1/embeddings"));
        assert!(bad[0].contains("local_answers.embeddings_url"), "{bad:?}");
        let off = problems(|s| {
            s.cache.local_answers = false;
            s.local_answers.embeddings_url = url("http://127.0.0.1:1/v1/embeddings");
        });
        assert!(off[0].contains("cache.local_answers = true"), "{off:?}");
    }

    #[test]
    fn the_model_and_the_timeout_are_checked() {
        assert_eq!(
            problems(|s| s.local_answers.embeddings_model = " ".into()).len(),
            1
        );
        assert_eq!(
            problems(|s| s.local_answers.embeddings_timeout_ms = 0).len(),
            1
        );
        assert_eq!(
            problems(|s| s.local_answers.embeddings_timeout_ms = 60_001).len(),
            1
        );
    }
}
