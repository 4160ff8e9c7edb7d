//! The seed platforms' usage endpoints, each in its platform's shape, read from rollups (see
//! docs/usage-api.md). Handlers only shape what `tollgate_engine::reports` reads.
//!
//! - `llmhub`: `GET /v1/usage` (LLMHub and CrossModel in one object), `GET /v1/usage/models`
//! - `crossmodel`: `GET /v1/credits`
//! - `electronhub`: `GET /v1/user/models`, `GET /v1/user/me`, `GET /v1/user/logs`
//! - `runtype`: `GET /v1/model-usage`, `GET /v1/model-usage/{modelConfigId}`
//! - `export`: `GET /v1/usage/export` (CSV, JSON array or NDJSON, streamed)
//! - `openai_org`: `GET /v1/organization/usage/completions`, `/usage/embeddings`, `/costs`

mod crossmodel;
mod electronhub;
pub(crate) mod export;
mod llmhub;
pub mod model_configs;
mod openai_org;
mod openapi;
pub(crate) mod runtype;

use tollgate_core::money::{div_round_half_up, nanos_to_usd_f64};
use tollgate_core::rollup::RecordCursor;

use crate::error::ApiError;
use crate::params::Params;
use crate::routes::{Access, Routes};
use crate::state::AppState;

pub fn routes() -> Routes {
    use Access::*;
    Routes::new()
        .get("/v1/usage", User, llmhub::usage)
        .get("/v1/usage/models", User, llmhub::models)
        .get("/v1/usage/export", User, export::export)
        .get("/v1/credits", User, crossmodel::credits)
        .get("/v1/user/models", User, electronhub::models)
        .get("/v1/user/me", User, electronhub::me)
        .get("/v1/user/logs", User, electronhub::logs)
        .get("/v1/model-usage", User, runtype::stats)
        .get("/v1/model-usage/{model_config_id}", User, runtype::details)
        .get(
            "/v1/organization/usage/completions",
            Admin,
            openai_org::completions,
        )
        .get(
            "/v1/organization/usage/embeddings",
            Admin,
            openai_org::embeddings,
        )
        .get("/v1/organization/costs", Admin, openai_org::costs)
        .get("/openapi.json", Public, openapi::document)
}

/// `limit` (1–1000, default 50) and `cursor` of a newest-first page of raw records; `cursor_field`
/// names the response field the cursor came from, for the error message.
pub(crate) fn page_params(
    p: &Params,
    cursor_field: &str,
) -> Result<(usize, Option<RecordCursor>), ApiError> {
    let limit = p.int("limit", 1, 1000)?.unwrap_or(50) as usize;
    let cursor = match p.get("cursor")? {
        None => None,
        Some(v) => Some(RecordCursor::decode(v).ok_or_else(|| {
            ApiError::invalid(
                "cursor",
                format!("`cursor` must be a `{cursor_field}` from a previous page"),
            )
        })?),
    };
    Ok((limit, cursor))
}

// ---- money: integer nano-USD sums in, one conversion per displayed number ----

/// USD as a JSON number (ElectronHub, Runtype, OpenAI costs).
pub(crate) fn usd(nanos: i64) -> f64 {
    nanos_to_usd_f64(nanos)
}

/// Micro-units of the currency, rounded half up (CrossModel `cost_micro`).
pub(crate) fn micro(nanos: i64) -> i64 {
    i64::try_from(div_round_half_up(i128::from(nanos), 1000)).unwrap_or(i64::MAX)
}

/// Integer credits (LLMHub), at `credits.per_usd` credits per USD, rounded down.
pub(crate) fn credits(s: &AppState, nanos: i64) -> i64 {
    s.engine.credits.nanos_to_credits(nanos)
}

pub(crate) fn currency(s: &AppState) -> String {
    s.engine.credits.config().currency.clone()
}
