//! Model configs (Runtype's `modelConfigId`): a configured model route, i.e. a (provider, model)
//! pair, with a stable id `cfg_` + the first 12 hex digits of SHA-256("provider/model"). The same
//! route has the same id in every process and every account, and no table is needed.
//!
//! An account sees the routes of the configuration (exact model names in `providers.*.models`,
//! and every priced model a pattern routes) and every route its own records used.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::state::AppState;
use tollgate_core::calendar::{MAX_MS, MIN_MS};
use tollgate_core::rollup::{Dims, RollupFilter};
use tollgate_core::Code;
use tollgate_engine::reports::Scope;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelConfig {
    pub id: String,
    #[serde(rename = "modelId")]
    pub model_id: String,
    pub provider: String,
    #[serde(rename = "displayName")]
    pub display_name: String,
}

pub fn config_id(provider: &str, model: &str) -> String {
    let digest = Sha256::digest(format!("{provider}/{model}").as_bytes());
    format!("cfg_{}", &hex::encode(digest)[..12])
}

pub fn display_name(s: &AppState, model: &str) -> String {
    s.engine
        .prices
        .get(model)
        .map(|p| p.display_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| model.to_string())
}

pub fn model_config(s: &AppState, provider: &str, model: &str) -> ModelConfig {
    ModelConfig {
        id: config_id(provider, model),
        model_id: model.to_string(),
        provider: provider.to_string(),
        display_name: display_name(s, model),
    }
}

/// Routes in the configuration: exact model names, and priced models a pattern routes.
fn configured_routes(s: &AppState) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (name, p) in &s.engine.config.providers {
        for m in p.models.iter().filter(|m| !m.ends_with('*')) {
            out.insert((name.clone(), m.clone()));
        }
    }
    for e in s.engine.prices.iter() {
        if let Some(p) = s.engine.router.route(&e.model) {
            out.insert((p.name.clone(), e.model.clone()));
        }
    }
    out
}

/// The route behind `id`, if the account can see it; 404 (naming `param`) otherwise.
pub(crate) async fn resolve(
    s: &AppState,
    scope: &Scope,
    id: &str,
    param: &str,
) -> Result<ModelConfig, ApiError> {
    let not_found =
        || ApiError::new(Code::NotFound, format!("no model config `{id}`")).with_param(param);
    if !id.starts_with("cfg_") || id.len() != 16 {
        return Err(not_found());
    }
    if let Some((p, m)) = configured_routes(s)
        .into_iter()
        .find(|(p, m)| config_id(p, m) == id)
    {
        return Ok(model_config(s, &p, &m));
    }
    // Routes the account used that are no longer configured.
    let filter = RollupFilter {
        accounts: Some(vec![scope.account_id.clone()]),
        ..RollupFilter::default()
    };
    let dims = Dims {
        model: true,
        provider: true,
        ..Dims::default()
    };
    let used = s.engine.totals(filter, dims, MIN_MS, MAX_MS).await?;
    for g in used.keys() {
        if let (Some(p), Some(m)) = (&g.provider, &g.model) {
            if config_id(p, m) == id {
                return Ok(model_config(s, p, m));
            }
        }
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(config_id("openai", "gpt-4o"), config_id("openai", "gpt-4o"));
        assert_ne!(config_id("openai", "gpt-4o"), config_id("azure", "gpt-4o"));
        let id = config_id("openai", "gpt-4o");
        assert!(id.starts_with("cfg_"));
        assert_eq!(id.len(), 16);
        // sha256("openai/gpt-4o") starts with these 12 hex digits.
        let full = hex::encode(Sha256::digest(b"openai/gpt-4o"));
        assert_eq!(&id[4..], &full[..12]);
    }
}
