//! Which configured provider serves a model: exact names first, then the longest matching
//! prefix pattern (`claude-*`).

use std::collections::HashMap;
use std::sync::Arc;

use http::Uri;
use tollgate_core::config::{Config, ProviderKind};
use tollgate_core::record::Endpoint;
use tollgate_core::{Code, DomainError};
use url::Url;

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Option<String>,
    /// Endpoint URLs, parsed once: chat/completions, embeddings, messages, responses.
    pub urls: [Option<Uri>; 4],
    /// Anthropic's `messages/count_tokens` (not a metered endpoint: no record, no price).
    pub count_tokens_url: Option<Uri>,
}

impl Provider {
    pub fn url(&self, api: Endpoint) -> Option<&Uri> {
        let i = match api {
            Endpoint::ChatCompletions => 0,
            Endpoint::Embeddings => 1,
            Endpoint::Messages => 2,
            Endpoint::Responses => 3,
        };
        self.urls[i].as_ref()
    }
}

#[derive(Debug, Default)]
pub struct ModelRouter {
    exact: HashMap<String, Arc<Provider>>,
    /// (prefix, provider), longest prefix first.
    prefixes: Vec<(String, Arc<Provider>)>,
    pub providers: Vec<Arc<Provider>>,
}

impl ModelRouter {
    pub fn from_config(config: &Config, env: impl Fn(&str) -> Option<String>) -> Self {
        let mut router = ModelRouter::default();
        for (name, p) in &config.providers {
            let base_url = p.base_url.trim_end_matches('/').to_string();
            // Checked as a URL (scheme, host), kept as the `Uri` the client sends to.
            let url = |path: &str| {
                let url = Url::parse(&format!("{base_url}/{path}")).ok()?;
                Uri::try_from(url.as_str()).ok()
            };
            let provider = Arc::new(Provider {
                name: name.clone(),
                kind: p.kind,
                urls: [
                    url("chat/completions"),
                    url("embeddings"),
                    url("messages"),
                    url("responses"),
                ],
                count_tokens_url: url("messages/count_tokens"),
                api_key: p.resolve_key(&env),
            });
            for m in &p.models {
                match m.strip_suffix('*') {
                    Some(prefix) => router.prefixes.push((prefix.to_string(), provider.clone())),
                    None => {
                        router.exact.insert(m.clone(), provider.clone());
                    }
                }
            }
            router.providers.push(provider);
        }
        router
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        router
    }

    /// The Anthropic provider that counts tokens for `model` (`/v1/messages/count_tokens`), or
    /// why none does: as `resolve` for messages.
    pub fn resolve_count_tokens(&self, model: &str) -> Result<&Arc<Provider>, DomainError> {
        self.resolve(model, Endpoint::Messages)
    }

    /// The provider that serves `model` on `api`, or why none does.
    pub fn resolve(&self, model: &str, api: Endpoint) -> Result<&Arc<Provider>, DomainError> {
        let provider = self.route(model).ok_or_else(|| {
            DomainError::new(
                Code::ModelNotFound,
                format!("the model `{model}` does not exist or is not routed by this gateway"),
            )
            .with_param("model")
        })?;
        match (api, provider.kind) {
            (Endpoint::Messages, ProviderKind::Openai) => Err(DomainError::invalid(
                "model",
                format!(
                    "model {model} is served by an OpenAI-compatible provider; call /v1/chat/completions"
                ),
            )),
            (Endpoint::Embeddings, ProviderKind::Anthropic) => Err(DomainError::invalid(
                "model",
                format!("model {model} has no embeddings endpoint"),
            )),
            // The model exists (so not 404), but its provider speaks another API, as for
            // messages to an OpenAI model: the caller is told where to send it.
            (Endpoint::Responses, ProviderKind::Anthropic) => Err(DomainError::invalid(
                "model",
                format!(
                    "model {model} is served by an Anthropic provider, which has no Responses API; call /v1/messages"
                ),
            )),
            _ => Ok(provider),
        }
    }

    pub fn route(&self, model: &str) -> Option<&Arc<Provider>> {
        self.exact.get(model).or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| model.starts_with(p.as_str()))
                .map(|(_, provider)| provider)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_pattern_and_longest_pattern_wins() {
        let mut config = Config::default();
        config.providers.get_mut("openai").unwrap().models =
            vec!["gpt-*".into(), "claude-special".into()];
        config.providers.get_mut("anthropic").unwrap().models =
            vec!["claude-*".into(), "gpt-4o-*".into()];
        let r = ModelRouter::from_config(&config, |_| None);
        assert_eq!(r.route("claude-special").unwrap().name, "openai");
        assert_eq!(r.route("claude-sonnet-4").unwrap().name, "anthropic");
        assert_eq!(r.route("gpt-4o-mini").unwrap().name, "anthropic");
        assert_eq!(r.route("gpt-4.1").unwrap().name, "openai");
        assert!(r.route("llama-3").is_none());
    }
}
