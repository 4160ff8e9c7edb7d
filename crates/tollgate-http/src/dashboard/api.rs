//! The dashboard's own endpoints: signing in and out, and thin reads over the engine's services
//! for what no usage API answers. Each is scoped like every usage route (`UsageQuery::scope`:
//! a user key its own account, an admin any named `account_id`), and sums come from the
//! rollups (`Engine::bucketed` / `totals`), so the numbers are the usage APIs' numbers.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::{json, Value};
use tollgate_core::account::ApiKeyRecord;
use tollgate_core::calendar::{
    self as time, day_start, local_date, month_first, next_month_first, period_start, MAX_MS,
    MINUTE_MS, MIN_MS,
};
use tollgate_core::money::div_round_half_up;
use tollgate_core::record::Status;
use tollgate_core::rollup::{Dims, GroupKey, RecordCursor, RecordFilter, RollupFilter, Sums};
use tollgate_core::Code;
use tollgate_engine::keys::hash_key;

use crate::compat::export::Row;
use crate::compat::{page_params, runtype, usd};
use crate::error::ApiError;
use crate::extract::{presented_key, LimitedBody, UsageQuery};
use crate::session::{self, Session};
use crate::state::SharedState;

/// The client reached us over HTTPS (through a proxy that says so): the cookie gets `Secure`.
fn https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Who is signed in, and the CSRF token when by cookie.
async fn whoami(
    s: &SharedState,
    q: &UsageQuery,
    sess: Option<&Session>,
) -> Result<Value, ApiError> {
    let scope = q.scope(s).await?;
    let account = s.engine.store.get_account(&q.caller.account_id).await?;
    let key = s.engine.store.get_key(&q.caller.key_id).await?;
    Ok(json!({
        "signed_in": true,
        "account_id": q.caller.account_id,
        "account_name": account.map(|a| a.name),
        "key_id": q.caller.key_id,
        "key_name": key.as_ref().map(|k| k.name.clone()),
        "key_last4": key.map(|k| k.last4),
        "role": q.caller.role.as_str(),
        "viewing_account_id": scope.account_id,
        "csrf_token": sess.map(|x| x.csrf.clone()),
        "expires_at_ms": sess.map(|x| x.expires_at_ms),
        "credits_per_usd": s.engine.credits.config().per_usd,
        "currency": s.engine.credits.config().currency,
    }))
}

/// `POST /dashboard/api/session`: the key in `Authorization: Bearer` (or `x-api-key`) becomes a
/// session cookie. Only a header key signs in: a session does not beget sessions.
pub async fn sign_in(
    State(s): State<SharedState>,
    headers: HeaderMap,
    q: UsageQuery,
    // Read (and bounded, 413 past the limit) though unused: every POST treats bodies alike.
    LimitedBody(_body): LimitedBody,
) -> Result<Response, ApiError> {
    let Some(key) = presented_key(&headers) else {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "sign in with the API key in `Authorization: Bearer <key>`",
        ));
    };
    // Checked before the session exists: a refused sign-in leaves nothing behind.
    q.scope(&s).await?;
    let sess = s.sessions.create(&hash_key(key), s.engine.clock.now_ms());
    let body = whoami(&s, &q, Some(&sess)).await?;
    let resp = (StatusCode::CREATED, Json(body)).into_response();
    Ok(with_cookie(
        resp,
        &session::set_cookie(&sess, https(&headers)),
    ))
}

/// `GET /dashboard/api/session`: the signed-in caller and the session's CSRF token, or
/// `{"signed_in": false}` (a 200, so a page opened before signing in logs no failed request).
/// It reads the session cookie only: a key in a header is not looked at, so this public route
/// cannot tell good keys from bad ones past the failed-authentication brake.
pub async fn session(
    State(s): State<SharedState>,
    headers: HeaderMap,
    q: Result<UsageQuery, ApiError>,
    sess: Option<Extension<Session>>,
) -> Result<Response, ApiError> {
    let body = match (presented_key(&headers), q) {
        (Some(_), _) => json!({
            "signed_in": false,
            "reason": "this endpoint reads the session cookie, not a key",
        }),
        (None, Ok(q)) => whoami(&s, &q, sess.as_deref()).await?,
        (None, Err(e)) => json!({"signed_in": false, "reason": e.message}),
    };
    let mut resp = Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `DELETE /dashboard/api/session`: signs out (the session is gone on the server too).
pub async fn sign_out(
    State(s): State<SharedState>,
    headers: HeaderMap,
    q: UsageQuery,
    sess: Option<Extension<Session>>,
) -> Result<Response, ApiError> {
    q.scope(&s).await?;
    if let Some(Extension(sess)) = &sess {
        s.sessions.remove(&sess.id);
    }
    let body = json!({"signed_out": sess.is_some()});
    Ok(with_cookie(
        Json(body).into_response(),
        &session::clear_cookie(https(&headers)),
    ))
}

/// `GET /dashboard/api/live`: what only this process knows: requests in flight and what they
/// hold (the balance is `GET /v1/credits`'s).
pub async fn live(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let scope = q.scope(&s).await?;
    let v = s.engine.credits.view(&scope.account_id).await?;
    Ok(Json(json!({
        "account_id": scope.account_id,
        "in_flight": v.in_flight,
        "held_nanos": v.held_nanos,
        "balance_nanos": v.balance_nanos,
    }))
    .into_response())
}

/// Sums as the dashboard shows them: the integers, and USD as Runtype gives them (JSON
/// numbers of the model cost; the average rounded half up to the nano-USD).
#[derive(Debug, Serialize, Default)]
pub struct SumsView {
    pub requests: i64,
    pub success: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub cost_nanos: i64,
    pub charged_nanos: i64,
    pub cost: f64,
    pub avg_cost_per_request: f64,
}

impl From<&Sums> for SumsView {
    fn from(v: &Sums) -> Self {
        let avg = if v.requests > 0 {
            i64::try_from(div_round_half_up(
                i128::from(v.cost_nanos),
                i128::from(v.requests),
            ))
            .unwrap_or(i64::MAX)
        } else {
            0
        };
        SumsView {
            requests: v.requests,
            success: v.success,
            input_tokens: v.input_tokens,
            output_tokens: v.output_tokens,
            cached_tokens: v.cached_tokens,
            reasoning_tokens: v.reasoning_tokens,
            total_tokens: v.total_tokens(),
            cost_nanos: v.cost_nanos,
            charged_nanos: v.charged_nanos,
            cost: usd(v.cost_nanos),
            avg_cost_per_request: usd(avg),
        }
    }
}

#[derive(Debug, Serialize)]
struct Point {
    requests: i64,
    tokens: i64,
    cost: f64,
    cost_nanos: i64,
}

#[derive(Debug, Serialize)]
struct Group {
    id: String,
    label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    owned_by: Option<String>,
    totals: SumsView,
    points: Vec<Point>,
}

/// Key labels: name and last four characters.
async fn key_names(s: &SharedState, account: &str) -> Result<HashMap<String, String>, ApiError> {
    Ok(s.engine
        .store
        .list_keys(Some(account.to_string()))
        .await?
        .into_iter()
        .map(|k| (k.id.clone(), format!("{} …{}", k.name, k.last4)))
        .collect())
}

/// `GET /dashboard/api/series`: Runtype's range and buckets (`period` or `startDate`/`endDate`,
/// `granularity`, `timezone`), each bucket split by `group` (`model`, `key`, `provider`,
/// `user` (the end user; `""` for usage that named none), or `none`); `user` and `tag` filter. Bucket for bucket, the groups add up to `/v1/model-usage`'s `timeSeries`.
pub async fn series(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let r = runtype::range(&s, &q.p)?;
    let group = q.p.get("group")?.unwrap_or("model");
    let dims = match group {
        "model" => Dims {
            model: true,
            ..Dims::default()
        },
        "key" => Dims {
            key: true,
            ..Dims::default()
        },
        "provider" => Dims {
            provider: true,
            ..Dims::default()
        },
        "user" => Dims {
            user: true,
            ..Dims::default()
        },
        "none" => Dims::default(),
        other => {
            return Err(ApiError::invalid(
                "group",
                format!("`group` must be model, key, provider, user or none, got `{other}`"),
            ))
        }
    };
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;
    let rows = s
        .engine
        .bucketed(scope.filter(), dims, &r.grid.bounds)
        .await?;
    let n = r.grid.len();
    let mut groups: BTreeMap<String, Vec<Sums>> = BTreeMap::new();
    let mut total = Sums::default();
    for ((i, g), v) in rows {
        let id = match group {
            "model" => g.model.clone().unwrap_or_default(),
            "key" => g.key_id.clone().unwrap_or_default(),
            "provider" => g.provider.clone().unwrap_or_default(),
            // Usage that named no end user; no user id is empty, so this cannot collide.
            "user" => g.user.clone().unwrap_or_default(),
            _ => "all".to_string(),
        };
        groups.entry(id).or_insert_with(|| vec![Sums::default(); n])[i].add(&v);
        total.add(&v);
    }
    let names = if group == "key" {
        key_names(&s, &scope.account_id).await?
    } else {
        HashMap::new()
    };
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|(id, points)| {
            let mut t = Sums::default();
            for p in &points {
                t.add(p);
            }
            let owned_by = (group == "model").then(|| {
                s.engine
                    .prices
                    .get(&id)
                    .map(|p| p.owned_by.clone())
                    .unwrap_or_default()
            });
            let label = match names.get(&id) {
                Some(name) => name.clone(),
                None if group == "user" && id.is_empty() => "(no end user)".to_string(),
                None => id.clone(),
            };
            Group {
                label,
                id,
                owned_by,
                totals: SumsView::from(&t),
                points: points
                    .iter()
                    .map(|v| Point {
                        requests: v.requests,
                        tokens: v.total_tokens(),
                        cost: usd(v.cost_nanos),
                        cost_nanos: v.cost_nanos,
                    })
                    .collect(),
            }
        })
        .collect();
    // Most spend first, ties by id: the stack's order and the models table's.
    out.sort_by(|a, b| {
        b.totals
            .cost_nanos
            .cmp(&a.totals.cost_nanos)
            .then_with(|| a.id.cmp(&b.id))
    });
    let buckets: Vec<Value> = (0..n)
        .map(|i| json!({"date": r.grid.label(i), "start_ms": r.grid.start(i), "end_ms": r.grid.end(i)}))
        .collect();
    Ok(Json(json!({
        "meta": {
            "startDate": time::format_date(r.first),
            "endDate": time::format_date(r.last),
            "granularity": r.unit.as_str(),
            "period": r.period,
            "timezone": r.tz.name(),
            "group": group,
        },
        "buckets": buckets,
        "groups": out,
        "totals": SumsView::from(&total),
    }))
    .into_response())
}

/// `GET /dashboard/api/keys`: the account's keys (a user key may read its own account's), each
/// with this UTC month's usage, its spend in its limit's period (as the limiter counts it:
/// model cost), this UTC minute's requests and tokens (the rpm / tpm windows), and when it was
/// last used.
pub async fn keys(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;
    let now = s.engine.clock.now_ms();
    let keys: Vec<ApiKeyRecord> = s
        .engine
        .store
        .list_keys(Some(scope.account_id.clone()))
        .await?;
    let mut filter = RollupFilter {
        accounts: Some(vec![scope.account_id.clone()]),
        ..RollupFilter::default()
    };
    if let Some(k) = &scope.key_id {
        filter.key_ids = vec![k.clone()];
    }
    let by_key = Dims {
        key: true,
        ..Dims::default()
    };
    let today = local_date(chrono_tz::UTC, now);
    let (month_start, month_end) = (
        day_start(chrono_tz::UTC, month_first(today)),
        day_start(chrono_tz::UTC, next_month_first(today)),
    );
    let month = s
        .engine
        .totals(filter.clone(), by_key, month_start, month_end)
        .await?;
    let minute_start = now.div_euclid(MINUTE_MS) * MINUTE_MS;
    let minute = s
        .engine
        .totals(filter, by_key, minute_start, minute_start + MINUTE_MS)
        .await?;
    let per_key = |m: BTreeMap<GroupKey, Sums>| -> HashMap<String, Sums> {
        m.into_iter()
            .map(|(g, v)| (g.key_id.unwrap_or_default(), v))
            .collect()
    };
    let (month, minute) = (per_key(month), per_key(minute));
    let of = |m: &HashMap<String, Sums>, id: &str| m.get(id).copied().unwrap_or_default();
    let mut data = Vec::new();
    for k in keys
        .iter()
        .filter(|k| scope.key_id.as_ref().is_none_or(|id| *id == k.id))
    {
        let spent = match (k.limits.spend_limit_nanos, k.limits.spend_period) {
            (Some(_), p) => {
                let p = p.unwrap_or(tollgate_core::account::Period::Total);
                Some(
                    s.engine
                        .store
                        .key_spend_since(&k.id, period_start(p, now))
                        .await?,
                )
            }
            (None, _) => None,
        };
        let last = s
            .engine
            .store
            .records_page(
                RecordFilter {
                    account_id: scope.account_id.clone(),
                    key_id: Some(k.id.clone()),
                    start_ms: MIN_MS,
                    end_ms: MAX_MS,
                    ..RecordFilter::default()
                },
                None,
                true,
                1,
            )
            .await?;
        let m = of(&minute, &k.id);
        data.push(json!({
            "key": k,
            "month": SumsView::from(&of(&month, &k.id)),
            "period_spend_nanos": spent,
            "minute_requests": m.requests,
            "minute_tokens": m.total_tokens(),
            "last_used_ms": last.first().map(|r| r.created_at_ms),
        }));
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "month_start": time::rfc3339(chrono_tz::UTC, month_start, false),
    }))
    .into_response())
}

/// Records one page of the request log looks through at most, when a status filter skips most
/// of them: the page then comes back short, with a cursor to look further.
const SCAN_LIMIT: usize = 2_000;

/// `GET /dashboard/api/requests`: the request log, newest first, filtered by `model`, `key_id`
/// and `status`, paged by `cursor` (`next_cursor` of the previous page), `limit` 1–1000
/// (default 50). Rows are the export's (same fields and money strings) plus the key's name.
pub async fn requests(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let (limit, mut cursor) = page_params(&q.p, "next_cursor")?;
    let status = match q.p.get("status")? {
        None | Some("") => None,
        Some(v) => Some(
            [
                Status::Success,
                Status::Error,
                Status::Cancelled,
                Status::Interrupted,
                Status::Refused,
            ]
            .into_iter()
            .find(|st| st.as_str() == v)
            .ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    format!(
                        "`status` must be success, error, cancelled, interrupted or refused, \
                         got `{v}`"
                    ),
                )
            })?,
        ),
    };
    let scope = q.scope(&s).await?;
    q.read_your_writes(&s).await;
    let filter = RecordFilter {
        model: q
            .p
            .get("model")?
            .filter(|m| !m.is_empty())
            .map(String::from),
        ..scope.records(MIN_MS, MAX_MS)
    };
    let names = key_names(&s, &scope.account_id).await?;
    // Unfiltered, one page of `limit`; with a status filter, larger pages until `limit` rows
    // match or SCAN_LIMIT records were looked at. The cursor is the last record looked at.
    let page_size = if status.is_some() { 200 } else { limit };
    let (mut rows, mut scanned, mut more) = (Vec::new(), 0, false);
    'pages: loop {
        let page = s
            .engine
            .store
            .records_page(filter.clone(), cursor.clone(), true, page_size + 1)
            .await?;
        let full = page.len() > page_size;
        for r in page.iter().take(page_size) {
            if rows.len() == limit || scanned == SCAN_LIMIT {
                more = true; // `r` is still to be looked at
                break 'pages;
            }
            scanned += 1;
            cursor = Some(RecordCursor {
                created_at_ms: r.created_at_ms,
                request_id: r.request_id.clone(),
            });
            if status.is_none_or(|st| r.status == st) {
                let mut v = serde_json::to_value(Row::new(r)).map_err(ApiError::internal)?;
                v["key_name"] = json!(names.get(&r.key_id));
                rows.push(v);
            }
        }
        if !full {
            break;
        }
        // A full page: at least one more record follows.
        if rows.len() == limit || scanned == SCAN_LIMIT {
            more = true;
            break;
        }
    }
    let next = if more {
        cursor.map(|c| c.encode())
    } else {
        None
    };
    Ok(Json(json!({
        "object": "list",
        "data": rows,
        "has_more": more,
        "next_cursor": next,
    }))
    .into_response())
}

/// `GET /dashboard/api/credits`: the balance, what requests in flight hold, and the grants and
/// refunds behind it, newest first (`limit` 1–1000, default 100), in credits and nano-USD.
pub async fn credits(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    let scope = q.scope(&s).await?;
    let limit = q.p.int("limit", 1, 1000)?.unwrap_or(100) as usize;
    let c = &s.engine.credits;
    let v = c.view(&scope.account_id).await?;
    let mut entries = s
        .engine
        .store
        .list_credits(&scope.account_id, limit)
        .await?;
    entries.sort_by(|a, b| {
        b.created_at_ms
            .cmp(&a.created_at_ms)
            .then_with(|| b.id.cmp(&a.id))
    });
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let credits = c.nanos_to_credits(e.amount_nanos);
            let mut v = serde_json::to_value(&e).unwrap_or(Value::Null);
            v["amount_credits"] = json!(credits);
            v
        })
        .collect();
    Ok(Json(json!({
        "account_id": scope.account_id,
        "currency": c.config().currency,
        "credits_per_usd": c.config().per_usd,
        "balance_nanos": v.balance_nanos,
        "held_nanos": v.held_nanos,
        "balance_credits": c.nanos_to_credits(v.balance_nanos),
        "available_credits": c.nanos_to_credits(v.balance_nanos - v.held_nanos),
        "entries": entries,
    }))
    .into_response())
}

/// `GET /dashboard/api/accounts` (admin): every account with this month's totals (in
/// `timezone`, as `/v1/usage`'s `monthly`) and its balance, from one rollup read.
pub async fn accounts(State(s): State<SharedState>, q: UsageQuery) -> Result<Response, ApiError> {
    if !q.caller.is_admin() {
        return Err(ApiError::new(
            Code::PermissionDenied,
            "this endpoint needs an admin key",
        ));
    }
    let tz = q.p.timezone()?;
    q.read_your_writes(&s).await;
    let today = local_date(tz, s.engine.clock.now_ms());
    let (start, end) = (
        day_start(tz, month_first(today)),
        day_start(tz, next_month_first(today)),
    );
    let sums = s
        .engine
        .totals(
            RollupFilter::default(),
            Dims {
                account: true,
                ..Dims::default()
            },
            start,
            end,
        )
        .await?;
    let by_account: HashMap<String, Sums> = sums
        .into_iter()
        .map(|(g, v)| (g.account_id.unwrap_or_default(), v))
        .collect();
    let mut data = Vec::new();
    for a in s.engine.store.list_accounts().await? {
        let v = s.engine.credits.view(&a.id).await?;
        let m = by_account.get(&a.id).copied().unwrap_or_default();
        data.push(json!({
            "id": a.id,
            "name": a.name,
            "disabled": a.disabled,
            "month": SumsView::from(&m),
            "cost_micro": crate::compat::micro(m.charged_nanos),
            "credits_used": s.engine.credits.nanos_to_credits(m.charged_nanos),
            "balance_credits": s.engine.credits.nanos_to_credits(v.balance_nanos),
            "in_flight": v.in_flight,
        }));
    }
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "period_start": time::rfc3339(tz, start, false),
        "timezone": tz.name(),
    }))
    .into_response())
}
