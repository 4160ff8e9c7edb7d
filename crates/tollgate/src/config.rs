//! Loading the configuration in layers: built-in defaults, then a TOML file, then `TOLLGATE_*`
//! environment variables. Every layer is merged as a TOML tree first and deserialized once with
//! `deny_unknown_fields`, so a misspelt key is an error that names the key, whichever layer
//! it came from. The types and their rules are `tollgate_core::config`.

use std::path::{Path, PathBuf};

pub use tollgate_core::config::*;

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

/// Loads defaults, then `file` (if given, or `./tollgate.toml` if it exists), then the
/// process environment.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, &env)
}

pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
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
    config.validate().map_err(|e| ConfigError::Invalid(e.0))?;
    Ok(config)
}

/// `TOLLGATE_SERVER__LISTEN=0.0.0.0:9000` sets `server.listen`; `__` separates levels. Values
/// are read as TOML scalars when they parse as such (numbers, booleans), else as strings.
fn apply_env(tree: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix("TOLLGATE_") else {
            continue;
        };
        // Variables the CLI reads itself, not config keys.
        if rest == "CONFIG" || rest == "LOG" || rest == "LOG_FORMAT" {
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
        let c = load_from(None, &[]).unwrap();
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
        let c = load_from(
            Some(&path),
            &env(&[("TOLLGATE_SERVER__MAX_BODY_BYTES", "4096")]),
        )
        .unwrap();
        assert_eq!(c.server.key_prefix, "ab-");
        assert_eq!(c.server.max_body_bytes, 4096);

        std::fs::write(&path, "[server]\nlisten_adress = \"x\"\n").unwrap();
        let err = load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("listen_adress"), "{err}");
        let err = load_from(None, &env(&[("TOLLGATE_SERVER__BOGUS", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn metering_ceiling_and_opaque_allowance_are_validated() {
        let c = load_from(None, &[]).unwrap();
        assert_eq!(c.metering.max_tokens_per_request, 10_000_000);
        assert_eq!(c.credits.hold_tokens_per_opaque_part, 4096);
        for (var, value, key) in [
            (
                "TOLLGATE_METERING__MAX_TOKENS_PER_REQUEST",
                "0",
                "metering.max_tokens_per_request",
            ),
            (
                "TOLLGATE_METERING__MAX_TOKENS_PER_REQUEST",
                "100000001",
                "metering.max_tokens_per_request",
            ),
            (
                "TOLLGATE_CREDITS__HOLD_TOKENS_PER_OPAQUE_PART",
                "100000001",
                "credits.hold_tokens_per_opaque_part",
            ),
        ] {
            let err = load_from(None, &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
        let c = load_from(
            None,
            &env(&[("TOLLGATE_METERING__MAX_TOKENS_PER_REQUEST", "2000000")]),
        )
        .unwrap();
        assert_eq!(c.metering.max_tokens_per_request, 2_000_000);
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
        let c = load_from(Some(&path), &[]).unwrap();
        assert_eq!(c.providers.len(), 1);
        let bad = "[providers.local]\nkind = \"openai\"\nbase_url = \"ftp://x\"\n";
        std::fs::write(&path, bad).unwrap();
        let err = load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("providers.local.base_url"), "{err}");
    }

    #[test]
    fn upstream_limits_have_defaults_and_are_validated() {
        let c = load_from(None, &[]).unwrap();
        assert_eq!(c.server.max_upstream_body_bytes, 32 * 1024 * 1024);
        assert_eq!(c.server.max_sse_event_bytes, 4 * 1024 * 1024);
        assert_eq!(c.server.max_stream_secs, 3600);
        for (var, value, named) in [
            (
                "TOLLGATE_SERVER__MAX_UPSTREAM_BODY_BYTES",
                "10",
                "max_upstream_body_bytes",
            ),
            (
                "TOLLGATE_SERVER__MAX_SSE_EVENT_BYTES",
                "0",
                "max_sse_event_bytes",
            ),
            ("TOLLGATE_SERVER__MAX_STREAM_SECS", "0", "max_stream_secs"),
        ] {
            let err = load_from(None, &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn records_retention_is_optional_validated_and_set_by_env() {
        let c = load_from(None, &[]).unwrap();
        assert_eq!(
            c.records.retention_days, None,
            "records are kept forever by default"
        );
        assert_eq!(c.records.retention_cutoff_ms(1_000_000_000_000), None);
        let c = load_from(None, &env(&[("TOLLGATE_RECORDS__RETENTION_DAYS", "30")])).unwrap();
        assert_eq!(c.records.retention_days, Some(30));
        assert_eq!(
            c.records.retention_cutoff_ms(100 * 86_400_000),
            Some(70 * 86_400_000)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[records]\nretention_days = 90\n").unwrap();
        assert_eq!(
            load_from(Some(&path), &[]).unwrap().records.retention_days,
            Some(90)
        );
        for bad in ["0", "36501"] {
            let err = load_from(None, &env(&[("TOLLGATE_RECORDS__RETENTION_DAYS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("records.retention_days"), "{err}");
        }
        std::fs::write(&path, "[records]\nretention_dayz = 90\n").unwrap();
        let err = load_from(Some(&path), &[]).unwrap_err().to_string();
        assert!(err.contains("retention_dayz"), "{err}");
    }
}
