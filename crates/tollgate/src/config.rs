//! Typed, layered configuration: built-in defaults, then a TOML file, then `TOLLGATE_*`
//! environment variables. Every layer is merged as a TOML tree first and deserialized once with
//! `deny_unknown_fields`, so a misspelt key is an error that names the key, whichever layer
//! it came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::metering::money::NANOS_PER_USD;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub journal: JournalConfig,
    pub credits: CreditsConfig,
    pub limits: LimitsConfig,
    pub security: SecurityConfig,
    /// Upstream providers by name. Each says which models it serves.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Extra or overriding price entries, by model name.
    pub prices: BTreeMap<String, PriceOverride>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the SQLite database and the journal live.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes; larger bodies get 413 before being read.
    pub max_body_bytes: usize,
    /// Prefix of every API key the gateway issues.
    pub key_prefix: String,
    /// Seconds to wait for an upstream's response headers (504 after that).
    pub upstream_timeout_secs: u64,
    /// Seconds to wait between two chunks of an upstream stream before giving up on it.
    pub stream_idle_timeout_secs: u64,
    /// After a client disconnects mid-stream, how long we keep reading the upstream to learn the
    /// real usage.
    pub drain_timeout_secs: u64,
    /// How long a validated key stays cached before it is re-read from the store (so a revoke
    /// made by another process is seen within this time).
    pub key_cache_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite` (default, embedded). PostgreSQL comes later.
    pub kind: String,
    /// Defaults to `<data_dir>/tollgate.db`.
    pub sqlite_path: Option<PathBuf>,
    /// Most records written in one transaction. The writer commits whatever has arrived as
    /// soon as the previous commit ends, so batches grow with load and stay small when idle.
    pub batch_max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Segment size after which the journal starts a new file.
    pub segment_bytes: u64,
    /// `fsync` the journal this often (milliseconds; 0 = never). Writes reach the OS page cache
    /// before a response is sent, which already survives a killed process; fsync adds power-loss
    /// safety.
    pub fsync_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CreditsConfig {
    /// Refuse (402) requests whose maximum cost the account's balance cannot cover. With
    /// `false`, usage is still charged and balances may go negative.
    pub enforce: bool,
    /// Credits per USD: the unit of `x-credits-remaining` and of credit fields in the usage
    /// APIs. Default 1,000,000 (one credit = one micro-USD).
    pub per_usd: i64,
    /// Currency of `*_micro` fields.
    pub currency: String,
    /// Fee charged on bring-your-own-key requests, in basis points of their cost (0 = free).
    pub byok_fee_bps: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Failed authentications from one client address per minute before it gets 429 without a
    /// key lookup.
    pub auth_failures_per_minute: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Base64 of 32 random bytes; encrypts accounts' own provider keys at rest. Without it,
    /// bring-your-own-key is off. Generate one with `openssl rand -base64 32`.
    pub encryption_key: Option<String>,
}

impl Default for CreditsConfig {
    fn default() -> Self {
        Self {
            enforce: true,
            per_usd: 1_000_000,
            currency: "USD".into(),
            byok_fee_bps: 0,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            auth_failures_per_minute: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Speaks OpenAI's API: OpenAI, DeepSeek, Groq, Together, vLLM, Ollama, OpenRouter, Mistral…
    Openai,
    /// Speaks Anthropic's Messages API (and its OpenAI-compatible chat endpoint).
    Anthropic,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Base URL including the version segment, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The provider credential; wins over `api_key_env` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Name of an environment variable holding the provider credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Model names or patterns (`claude-*`) this provider serves. Exact names win over patterns;
    /// among patterns the longest wins.
    #[serde(default)]
    pub models: Vec<String>,
}

/// A price entry from config, in USD per million tokens, written as decimal strings (or numbers)
/// so that no binary float is involved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    pub input: toml::Value,
    pub output: toml::Value,
    #[serde(default)]
    pub cached_input: Option<toml::Value>,
    #[serde(default)]
    pub cache_write: Option<toml::Value>,
    #[serde(default)]
    pub owned_by: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            max_body_bytes: 4 * 1024 * 1024,
            key_prefix: "tg-".into(),
            upstream_timeout_secs: 600,
            stream_idle_timeout_secs: 300,
            drain_timeout_secs: 120,
            key_cache_secs: 5,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: "sqlite".into(),
            sqlite_path: None,
            batch_max: 1024,
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 16 * 1024 * 1024,
            fsync_interval_ms: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut providers = BTreeMap::new();
        providers.insert(
            "openai".to_string(),
            ProviderConfig {
                kind: ProviderKind::Openai,
                base_url: "https://api.openai.com/v1".into(),
                api_key: None,
                api_key_env: Some("OPENAI_API_KEY".into()),
                models: [
                    "gpt-*",
                    "o1*",
                    "o3*",
                    "o4*",
                    "text-embedding-*",
                    "chatgpt-*",
                ]
                .map(String::from)
                .to_vec(),
            },
        );
        providers.insert(
            "anthropic".to_string(),
            ProviderConfig {
                kind: ProviderKind::Anthropic,
                base_url: "https://api.anthropic.com/v1".into(),
                api_key: None,
                api_key_env: Some("ANTHROPIC_API_KEY".into()),
                models: vec!["claude-*".into()],
            },
        );
        Self {
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            journal: JournalConfig::default(),
            credits: CreditsConfig::default(),
            limits: LimitsConfig::default(),
            security: SecurityConfig::default(),
            providers,
            prices: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults, then `file` (if given, or `./tollgate.toml` if it exists), then the
    /// process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let default_file = Path::new("tollgate.toml");
        let file = match file {
            Some(f) => Some(f.to_path_buf()),
            None if default_file.exists() => Some(default_file.to_path_buf()),
            None => None,
        };
        let mut tree = toml::Table::new();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            tree = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
        }
        // Configured providers replace the built-in pair rather than merging with it (a config
        // that names only a local vLLM must not also route `gpt-*` to OpenAI). Without any, the
        // built-in pair is put in the tree so env variables can still set e.g. its api_key.
        if !tree.contains_key("providers") {
            let defaults = toml::Value::try_from(Config::default().providers)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            tree.insert("providers".into(), defaults);
        }
        apply_env(&mut tree, env)?;
        // Deserialized through serde_path_to_error so a bad value names its key
        // (`server.max_body_bytes: invalid type ...`), wherever it came from.
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(tree))
            .map_err(|e| ConfigError::Invalid(explain(&e)))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.store.kind != "sqlite" {
            return Err(ConfigError::Invalid(format!(
                "store.kind = {:?} is not supported yet; use \"sqlite\"",
                self.store.kind
            )));
        }
        if self.server.key_prefix.is_empty() || self.server.key_prefix.len() > 16 {
            return Err(ConfigError::Invalid(
                "server.key_prefix must be 1 to 16 characters".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        if self.credits.per_usd <= 0 || NANOS_PER_USD % self.credits.per_usd != 0 {
            return Err(ConfigError::Invalid(
                "credits.per_usd must be a positive divisor of 1000000000 (e.g. 100, 100000, 1000000)".into(),
            ));
        }
        if !(0..=10_000).contains(&self.credits.byok_fee_bps) {
            return Err(ConfigError::Invalid(
                "credits.byok_fee_bps must be 0 to 10000".into(),
            ));
        }
        if let Some(k) = &self.security.encryption_key {
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .is_ok_and(|b| b.len() == 32);
            if !ok {
                return Err(ConfigError::Invalid(
                    "security.encryption_key must be base64 of exactly 32 bytes (openssl rand -base64 32)".into(),
                ));
            }
        }
        if self.store.batch_max == 0 {
            return Err(ConfigError::Invalid(
                "store.batch_max must be at least 1".into(),
            ));
        }
        for (name, p) in &self.providers {
            if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "providers.{name}.base_url = {:?} must start with http:// or https://",
                    p.base_url
                )));
            }
            for m in &p.models {
                if m.is_empty()
                    || m.matches('*').count() > 1
                    || (m.contains('*') && !m.ends_with('*'))
                {
                    return Err(ConfigError::Invalid(format!(
                        "providers.{name}.models: {m:?} must be an exact name or a prefix ending in a single '*'"
                    )));
                }
            }
        }
        for (model, p) in &self.prices {
            crate::metering::prices::PriceEntry::from_override(model, p)
                .map_err(|e| ConfigError::Invalid(format!("prices.{model}: {e}")))?;
        }
        Ok(())
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.store
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("tollgate.db"))
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.server.data_dir.join("journal")
    }
}

impl ProviderConfig {
    /// The credential, resolved from the environment when configured by name.
    pub fn resolve_key(&self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        match (&self.api_key, &self.api_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(var)) => env(var),
            (None, None) => None,
        }
    }
}

/// `TOLLGATE_SERVER__LISTEN=0.0.0.0:9000` sets `server.listen`; `__` separates levels. Values
/// are read as TOML scalars when they parse as such (numbers, booleans), else as strings.
fn apply_env(tree: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix("TOLLGATE_") else {
            continue;
        };
        // Variables the CLI reads itself, not config keys.
        if rest == "CONFIG" || rest == "LOG" {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::Env {
                var: key.clone(),
                message: "empty path segment".into(),
            });
        }
        let value = parse_env_value(raw);
        let mut table = &mut *tree;
        for seg in &path[..path.len() - 1] {
            let entry = table
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
                var: key.clone(),
                message: format!("{seg} is not a table"),
            })?;
        }
        if let Some(last) = path.last() {
            table.insert(last.clone(), value);
        }
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if raw.starts_with('[') {
        if let Ok(t) = format!("v = {raw}").parse::<toml::Table>() {
            if let Some(v) = t.get("v") {
                return v.clone();
            }
        }
    }
    toml::Value::String(raw.to_string())
}

fn explain(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let msg = e.inner().message().to_string();
    let path = e.path().to_string();
    let at = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    if msg.contains("unknown field") {
        format!("{at}{msg} (remove the key or fix its spelling)")
    } else {
        format!("{at}{msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_a_file() {
        let c = Config::load_from(None, &[]).unwrap();
        assert_eq!(c.server.key_prefix, "tg-");
        assert!(c.providers.contains_key("openai"));
    }

    #[test]
    fn env_overrides_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[server]\nkey_prefix = \"ab-\"\nmax_body_bytes = 2048\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&path),
            &env(&[("TOLLGATE_SERVER__MAX_BODY_BYTES", "4096")]),
        )
        .unwrap();
        assert_eq!(c.server.key_prefix, "ab-");
        assert_eq!(c.server.max_body_bytes, 4096);

        std::fs::write(&path, "[server]\nlisten_adress = \"x\"\n").unwrap();
        let err = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
        let err = Config::load_from(None, &env(&[("TOLLGATE_SERVER__BOGUS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn configured_providers_replace_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [\"llama-*\"]\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(c.providers.len(), 1);
        let bad = "[providers.local]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n";
        std::fs::write(&path, bad).unwrap();
        let err = Config::load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("providers.local.base_url"), "{err}");
    }
}
