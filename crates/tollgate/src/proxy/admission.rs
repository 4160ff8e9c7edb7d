//! Admission: who pays for a request, whether the account can cover its maximum cost, and
//! whether the key's limits allow it. Runs after the request is checked and routed, before
//! anything is forwarded; everything it takes (a credit hold, a limit permit) is settled once in
//! `Exchange::finish`, or released if the request never gets there.

use std::sync::Arc;

use super::routing::Provider;
use super::{ProxyRequest, Source};
use crate::app::AppState;
use crate::auth::Caller;
use crate::credits::limits::Permit;
use crate::credits::Hold;
use crate::error::{ApiError, ErrorCode};
use crate::metering::prices::{cost_nanos, PriceEntry};
use crate::metering::usage::Api;
use crate::metering::{tokenizer, Usage};

pub struct Admitted {
    /// The credential sent upstream.
    pub api_key: String,
    pub source: Source,
    pub hold: Hold,
    pub permit: Permit,
    /// Credit available (nano-USD) with this request's hold taken.
    pub available: i64,
    /// The key's `x-ratelimit-*` headers.
    pub rate_headers: Vec<(&'static str, String)>,
}

pub async fn admit(
    s: &AppState,
    caller: &Caller,
    api: Api,
    provider: &Arc<Provider>,
    price: &PriceEntry,
    req: &ProxyRequest,
) -> Result<Admitted, ApiError> {
    // Who pays: the account's own key for this provider (source `user`), else the platform's.
    let (api_key, source) = match s
        .provider_keys
        .get(&caller.account_id, &provider.name)
        .await?
    {
        Some(own) => (own, Source::User),
        None => match provider.api_key.clone() {
            Some(k) => (k, Source::Platform),
            None => {
                return Err(ApiError::new(
                    ErrorCode::ModelUnavailable,
                    format!("provider {} has no API key configured", provider.name),
                ))
            }
        },
    };
    // The most this request can cost: every body byte an input token (a BPE token is at least a
    // byte), plus the output cap at the output price. Only if that does not fit the balance is
    // the input counted with the tokenizer (with a margin for other providers' tokenizers).
    let max_output = match api {
        Api::Embeddings => 0,
        _ => req.max_output_tokens().unwrap_or(price.max_output_tokens),
    };
    let cost_of = |input_tokens: u64| {
        let usage = Usage {
            input_tokens,
            output_tokens: max_output,
            ..Usage::default()
        };
        cost_nanos(&usage, &price.prices)
    };
    let body_bound = req.forward.len() as u64;
    let bound = cost_of(body_bound);
    let charge = |cost: i64| source.charge(cost, s.config.credits.byok_fee_bps);
    let refine = || {
        let counted = tokenizer::count_request_input(&req.json);
        charge(cost_of((counted * 2 + 16).min(body_bound)))
    };
    let (hold, available) = s
        .credits
        .hold(&caller.account_id, charge(bound), refine)
        .await?;
    let mut permit = s.limiter.admit(caller, &req.model, bound).await?;
    let rate_headers = std::mem::take(&mut permit.headers);
    Ok(Admitted {
        rate_headers,
        api_key,
        source,
        hold,
        permit,
        available,
    })
}
