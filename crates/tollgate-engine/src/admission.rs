//! Admission: who pays for a request, whether the account can cover its maximum cost, and
//! whether the key's limits allow it. Runs after the request is checked and routed, before
//! anything is forwarded; what it takes (a credit hold, a limit permit) travels in the
//! `Ticket` and is settled once at the end (`settle.rs`), or released if the request never
//! gets there.

use std::sync::Arc;

use tollgate_core::account::Caller;
use tollgate_core::error::RateStatus;
use tollgate_core::metering::tokenizer;
use tollgate_core::pricing::{charge, PriceEntry};
use tollgate_core::record::{Endpoint, Source};
use tollgate_core::request::ProxyRequest;
use tollgate_core::{Code, DomainError};

use crate::routing::Provider;
use crate::settle::{refused_record, Arrival, Bounds, HoldBound, Ticket};
use crate::Engine;

/// The least `max_output_tokens` OpenAI's Responses API accepts.
const RESPONSES_MIN_OUTPUT: u64 = 16;

pub struct Admitted {
    /// The credential sent upstream.
    pub api_key: String,
    /// Credit available (nano-USD) with this request's hold taken.
    pub available: i64,
    /// The key's rate windows, for `x-ratelimit-*` headers.
    pub rate: RateStatus,
    /// Everything the request's end needs to meter and settle it.
    pub ticket: Ticket,
}

impl Engine {
    pub async fn admit(
        &self,
        arrival: Arrival,
        caller: &Caller,
        api: Endpoint,
        provider: &Arc<Provider>,
        price: &PriceEntry,
        req: &mut ProxyRequest,
    ) -> Result<Admitted, DomainError> {
        let (api_key, source) = self.provider_key(caller, provider).await?;
        // The most this request can cost: every body byte an input token (a BPE token is at
        // least a byte), plus a fixed allowance for each part whose size the body does not show
        // (media, files, server-side tools), plus the output cap (per choice, times `n`) at the
        // output price. Only if that does not fit the balance is the input counted with the
        // tokenizer (with a margin for other providers' tokenizers).
        let choices = req.choices();
        let client_max = match api {
            Endpoint::Embeddings => Some(0),
            _ => req.max_output_tokens(),
        };
        let per_choice = client_max.unwrap_or(price.max_output_tokens);
        // The smallest output cap the API accepts: OpenAI refuses a Responses
        // `max_output_tokens` below 16, so a cap the gateway sets is never lower.
        let floor = match api {
            Endpoint::Responses => RESPONSES_MIN_OUTPUT,
            _ => 1,
        };
        let max_output = per_choice.saturating_mul(choices);
        let fee = self.config.credits.byok_fee_bps;
        let opaque = tokenizer::opaque_input_parts(&req.json)
            .saturating_mul(self.config.credits.hold_tokens_per_opaque_part);
        let body_bytes = req.forward.len() as u64;
        let body_bound = body_bytes.saturating_add(opaque);
        let bound = price.max_cost(body_bound, Some(max_output));
        // The input the hold was computed with: the refined count, if it was needed.
        let mut held_input = body_bound;
        let refine = || {
            let counted = tokenizer::count_request_input(&req.json);
            let input = counted
                .saturating_mul(2)
                .saturating_add(16)
                .min(body_bytes)
                .saturating_add(opaque);
            held_input = input;
            let full = charge(source, price.max_cost(input, Some(max_output)), fee);
            // The least: the input and the smallest output cap per choice (below that, 402).
            let least = charge(
                source,
                price.max_cost(input, Some(choices.saturating_mul(floor).min(max_output))),
                fee,
            );
            (full, least)
        };
        let full = charge(source, bound, fee);
        let (hold, available) = self.credits.hold(&caller.account_id, full, refine).await?;
        let enforce = self.config.credits.enforce;
        // The usual case, a hold of the whole bound, covers the output cap by construction; only
        // a smaller hold needs the search for how much output it covers.
        let allowance = if hold.amount() >= full {
            max_output
        } else {
            price
                .max_output_within(hold.amount(), held_input, source, fee)
                .unwrap_or(0)
        };
        // The hold covers less output than asked: the request goes upstream capped to it.
        let capped = (enforce && allowance < max_output).then(|| (allowance / choices).max(floor));
        if let Some(cap) = capped {
            req.cap_output(api, cap)?;
        }
        let mut permit = self.limiter.admit(caller, &req.model, bound).await?;
        let rate = std::mem::take(&mut permit.rate);
        let bounds = Bounds {
            output_cap: capped.or(client_max.filter(|_| api != Endpoint::Embeddings)),
            capped,
            choices,
            hold: enforce.then(|| HoldBound {
                amount: hold.amount(),
                output_allowance: allowance,
            }),
            max_tokens: self.config.metering.max_tokens_per_request,
        };
        let ticket = Ticket::new(
            self.ledger.clone(),
            arrival,
            caller,
            api,
            req,
            provider.name.clone(),
            price,
            self.prices.version(),
            source,
            fee,
            hold,
            permit,
            available,
            bounds,
        )
        .with_in_flight(self.metrics.as_ref().map(|m| m.in_flight()));
        Ok(Admitted {
            api_key,
            available,
            rate,
            ticket,
        })
    }

    /// Who pays: the account's own key for this provider (source `user`), else the platform's.
    async fn provider_key(
        &self,
        caller: &Caller,
        provider: &Provider,
    ) -> Result<(String, Source), DomainError> {
        match self
            .provider_keys
            .get(&caller.account_id, &provider.name)
            .await?
        {
            Some(own) => Ok((own, Source::User)),
            None => match provider.api_key.clone() {
                Some(k) => Ok((k, Source::Platform)),
                None => Err(DomainError::new(
                    Code::ModelUnavailable,
                    format!("provider {} has no API key configured", provider.name),
                )),
            },
        }
    }

    /// Admission of a call that generates nothing and is not billed (Anthropic's
    /// `count_tokens`): the key's limits see it as a request (rpm, allowed models) costing
    /// nothing; no credit is held and no record is written. The permit is settled at once, at
    /// zero tokens and cost. Returns the upstream credential and the key's rate windows.
    pub async fn admit_unbilled(
        &self,
        caller: &Caller,
        provider: &Provider,
        model: &str,
    ) -> Result<(String, RateStatus), DomainError> {
        let (api_key, _source) = self.provider_key(caller, provider).await?;
        let mut permit = self.limiter.admit(caller, model, 0).await?;
        let rate = std::mem::take(&mut permit.rate);
        permit.settle(
            0,
            0,
            self.clock.now_ms(),
            (&caller.account_id, &caller.key_id),
        );
        Ok((api_key, rate))
    }

    /// Records an authenticated request the gateway answered itself without forwarding it
    /// (`settle::refused_record`). Like every record it goes through the journal and the batch
    /// writer: one JSON line, no transaction of its own.
    #[allow(clippy::too_many_arguments)]
    pub fn record_refused(
        &self,
        arrival: &Arrival,
        caller: &Caller,
        api: Endpoint,
        model: Option<&str>,
        streamed: bool,
        http_status: u16,
        error_code: &str,
    ) {
        let known = |m: &str| {
            (
                self.router.route(m).map(|p| p.name.clone()),
                self.prices.get(m).map(|p| p.owned_by.clone()),
            )
        };
        self.ledger.record(refused_record(
            arrival,
            caller,
            api,
            model,
            known,
            streamed,
            http_status,
            error_code,
        ));
    }
}
