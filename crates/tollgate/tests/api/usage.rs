//! The usage APIs through HTTP: a known mix of requests placed in time with the injectable clock,
//! and every endpoint's numbers checked against the sum of the stored records (and the records
//! against the mock's ledger), at the calendar edges: 23:59:59.999 vs 00:00:00 UTC, ISO week 1
//! across a year end, month ends, the 2028-02-29 leap day, and non-UTC time zones.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tollgate::clock::ManualClock;
use tollgate::record::Provenance;
use tollgate::record::{Status, UsageRecord};
use tollgate::{Application, Config};

use crate::helpers::*;

const ENCRYPTION: &str =
    "\n[security]\nencryption_key = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
const GRANT_NANOS: i64 = 100_000_000_000;

fn at(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn usd(nanos: i64) -> Value {
    json!(nanos as f64 / 1e9)
}

fn cfg_id(provider: &str, model: &str) -> String {
    let h = hex::encode(Sha256::digest(format!("{provider}/{model}").as_bytes()));
    format!("cfg_{}", &h[..12])
}

/// A stored record, as `/admin/requests` shows it.
#[derive(Debug, Clone)]
struct Rec {
    id: String,
    t: i64,
    finished: i64,
    account: String,
    key: String,
    endpoint: String,
    model: String,
    provider: String,
    owned_by: String,
    source: String,
    success: bool,
    input: i64,
    output: i64,
    cached: i64,
    cost: i64,
    charged: i64,
}

impl Rec {
    fn from(v: &Value) -> Rec {
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let i = |k: &str| v[k].as_i64().unwrap();
        Rec {
            id: s("request_id"),
            t: i("created_at_ms"),
            finished: i("finished_at_ms"),
            account: s("account_id"),
            key: s("key_id"),
            endpoint: s("endpoint"),
            model: s("model_requested"),
            provider: s("provider"),
            owned_by: s("owned_by"),
            source: s("source"),
            success: v["status"] == "success",
            input: i("input_tokens"),
            output: i("output_tokens"),
            cached: i("cached_tokens"),
            cost: i("cost_nanos"),
            charged: i("charged_nanos"),
        }
    }
}

/// Integer sums of records, the reference every endpoint is checked against.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tot {
    requests: i64,
    success: i64,
    input: i64,
    output: i64,
    cached: i64,
    cost: i64,
    charged: i64,
}

impl Tot {
    fn of<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Tot {
        let mut t = Tot::default();
        for r in recs {
            t.requests += 1;
            t.success += i64::from(r.success);
            t.input += r.input;
            t.output += r.output;
            t.cached += r.cached;
            t.cost += r.cost;
            t.charged += r.charged;
        }
        t
    }
    fn tokens(&self) -> i64 {
        self.input + self.output
    }
}

fn within<'a>(recs: &'a [Rec], from: &str, to: &str) -> Vec<&'a Rec> {
    let (a, b) = (at(from), at(to));
    recs.iter().filter(|r| r.t >= a && r.t < b).collect()
}

/// CrossModel's window object for these records.
fn window(recs: &[&Rec]) -> Value {
    let t = Tot::of(recs.iter().copied());
    json!({
        "cost_micro": (t.charged + 500).div_euclid(1000),
        "prompt_tokens": t.input,
        "completion_tokens": t.output,
        "total_tokens": t.tokens(),
        "request_count": t.requests,
        "success_count": t.success,
    })
}

/// LLMHub credits (1,000,000 per USD by default): nano-USD / 1000, rounded down.
fn credits(nanos: i64) -> i64 {
    nanos.div_euclid(1000)
}

struct Mix {
    app: TestApp,
    clock: ManualClock,
    key2: String,
    key2_id: String,
    other_account: String,
    other_key: String,
}

enum Call {
    Chat(&'static str, bool, Value),
    Messages(&'static str, bool, Value),
    Embeddings(&'static str),
}

impl Mix {
    async fn send(&self, when: &str, key: &str, call: Call) -> String {
        self.clock.set(at(when));
        let (path, body, x_api_key) = match call {
            Call::Chat(model, stream, mock) => (
                "/v1/chat/completions",
                json!({"model": model, "stream": stream, "mock": mock,
                       "messages": [{"role": "user", "content": "count the tokens of this"}]}),
                false,
            ),
            Call::Messages(model, stream, mock) => (
                "/v1/messages",
                json!({"model": model, "stream": stream, "mock": mock, "max_tokens": 64,
                       "messages": [{"role": "user", "content": "count these ones too"}]}),
                true,
            ),
            Call::Embeddings(model) => (
                "/v1/embeddings",
                json!({"model": model, "input": "embed me"}),
                false,
            ),
        };
        let req = self
            .app
            .http
            .post(format!("{}{path}", self.app.base))
            .json(&body);
        let req = if x_api_key {
            req.header("x-api-key", key)
        } else {
            req.bearer_auth(key)
        };
        let resp = req.send().await.unwrap();
        let id = request_id(&resp);
        // Read to the end: the request is complete (and so must be visible) after this.
        let _ = resp.bytes().await.unwrap();
        id
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.app.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn user(&self, path: &str) -> Value {
        let (status, v) = self.get(&self.app.user_key, path).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    async fn admin(&self, path: &str) -> Value {
        let (status, v) = self.get(&self.app.admin_key, path).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    async fn text(&self, path: &str) -> (String, String) {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.app.base))
            .bearer_auth(&self.app.user_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (ct, r.text().await.unwrap())
    }

    async fn records(&self, account: Option<&str>) -> Vec<Rec> {
        let path = match account {
            Some(a) => format!("/admin/requests?limit=10000&account_id={a}"),
            None => "/admin/requests?limit=10000".to_string(),
        };
        let v = self.admin(&path).await;
        let mut recs: Vec<Rec> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(Rec::from)
            .collect();
        recs.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
        recs
    }
}

async fn mix() -> (Mix, BTreeMap<&'static str, String>) {
    let clock = ManualClock::new(at("2025-12-01T00:00:00Z"));
    let app = spawn_app_with(Spawn {
        extra_toml: ENCRYPTION.into(),
        clock: Some(clock.clone()),
        grant_usd: Some("100"),
    })
    .await;
    // The account brings its own Anthropic key: its Claude requests are `user`-sourced.
    let r = app
        .http
        .put(format!(
            "{}/admin/accounts/{}/provider-keys/mockant",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .json(&json!({"api_key": "sk-own-anthropic-key-1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let key2: Value = app
        .http
        .post(format!(
            "{}/admin/accounts/{}/keys",
            app.base, app.account_id
        ))
        .bearer_auth(&app.admin_key)
        .json(&json!({"name": "second"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (other_account, _, other_key) =
        create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    grant(&app.http, &app.base, &app.admin_key, &other_account, "10").await;
    let m = Mix {
        app,
        clock,
        key2: key2["key"].as_str().unwrap().to_string(),
        key2_id: key2["id"].as_str().unwrap().to_string(),
        other_account,
        other_key,
    };
    let k1 = m.app.user_key.clone();
    let k2 = m.key2.clone();
    let claude = "claude-sonnet-4-20250514";
    let mut ids = BTreeMap::new();
    let plan: Vec<(&str, &str, &String, Call)> = vec![
        // Around ISO week 1 of 2026, which starts on Monday 2025-12-29.
        (
            "a1",
            "2025-12-28T23:59:59.999Z",
            &k1,
            Call::Chat(
                "gpt-4o",
                false,
                json!({"output_tokens": 5, "cached_tokens": 2}),
            ),
        ),
        (
            "a2",
            "2025-12-29T00:00:00.000Z",
            &k2,
            Call::Chat("gpt-4o-mini", true, json!({"output_tokens": 7})),
        ),
        (
            "a3",
            "2025-12-31T23:59:59.999Z",
            &k1,
            Call::Messages(
                claude,
                true,
                json!({"output_tokens": 9, "cached_tokens": 3}),
            ),
        ),
        (
            "a4",
            "2026-01-01T00:00:00.000Z",
            &k1,
            Call::Chat("gpt-4o", false, json!({"error_status": 500})),
        ),
        (
            "a5",
            "2026-01-04T23:59:59.999Z",
            &k2,
            Call::Embeddings("text-embedding-3-small"),
        ),
        (
            "a6",
            "2026-01-05T00:00:00.000Z",
            &k1,
            Call::Chat("gpt-4o-mini", false, json!({"omit_usage": true})),
        ),
        // Around the 2028 leap day and the month ends after it.
        (
            "b1",
            "2028-02-28T12:00:00.000Z",
            &k1,
            Call::Chat(
                "gpt-4o",
                true,
                json!({"output_tokens": 6, "reasoning_tokens": 4}),
            ),
        ),
        (
            "b2",
            "2028-02-29T00:00:00.000Z",
            &k2,
            Call::Messages(claude, false, json!({"output_tokens": 3})),
        ),
        (
            "b3",
            "2028-02-29T23:59:59.999Z",
            &k1,
            Call::Chat("gpt-4o-mini", false, json!({"cached_tokens": 1})),
        ),
        (
            "b4",
            "2028-03-01T00:00:00.000Z",
            &k1,
            Call::Chat("dead-model", false, json!({})),
        ),
        (
            "b5",
            "2028-03-31T23:59:59.999Z",
            &k2,
            Call::Chat("gpt-4o", true, json!({"omit_usage": true})),
        ),
        (
            "b6",
            "2028-04-01T00:00:00.000Z",
            &k1,
            Call::Chat("gpt-4o", false, json!({})),
        ),
    ];
    for (name, when, key, call) in plan {
        ids.insert(name, m.send(when, key, call).await);
    }
    // Another account's request on the leap day: never in this account's numbers.
    let other = m.other_key.clone();
    ids.insert(
        "o1",
        m.send(
            "2028-02-29T12:00:00.000Z",
            &other,
            Call::Chat("gpt-4o", false, json!({})),
        )
        .await,
    );
    (m, ids)
}

#[tokio::test]
async fn every_endpoint_equals_the_sum_of_its_records_at_the_calendar_edges() {
    let (m, ids) = mix().await;
    let recs = m.records(Some(&m.app.account_id)).await;
    assert_eq!(recs.len(), 12, "every request of the mix is recorded");
    let by_id: BTreeMap<&str, &Rec> = recs.iter().map(|r| (r.id.as_str(), r)).collect();
    let rec = |name: &str| by_id[ids[name].as_str()];
    // Placement: each record sits at the instant the clock said.
    assert_eq!(rec("a1").t, at("2025-12-28T23:59:59.999Z"));
    assert_eq!(rec("b4").t, at("2028-03-01T00:00:00Z"));
    // The records are the mock's truth where the provider reported usage.
    for name in ["a1", "a2", "a3", "b1", "b2", "b3", "b6"] {
        let e = m.app.ledger_entry(&ids[name]);
        let r = rec(name);
        assert_eq!(
            (r.input, r.output, r.cached),
            (
                e.input_tokens as i64,
                e.output_tokens as i64,
                e.cached_tokens as i64
            ),
            "{name}"
        );
        assert!(r.success, "{name}");
    }
    assert!(
        !rec("a4").success && !rec("b4").success,
        "failures are counted, as failures"
    );
    let full = m.admin(&format!("/admin/requests/{}", ids["a6"])).await;
    assert_eq!(full["provenance"], "estimated");
    assert!(
        rec("a6").input > 0 && rec("b5").input > 0,
        "estimated usage is still usage"
    );
    assert_eq!(
        (rec("a3").source.as_str(), rec("a3").charged),
        ("user", 0),
        "BYOK"
    );
    assert!(rec("a3").cost > 0 && rec("a1").cached == 2 && rec("a3").cached == 3);
    assert_eq!(rec("a2").key, m.key2_id);
    let all_charged: i64 = recs.iter().map(|r| r.charged).sum();

    // ---- /v1/usage: LLMHub + CrossModel, at several "now"s ----
    let check_usage = |v: &Value, day: (&str, &str), week: (&str, &str), month: (&str, &str)| {
        let d = within(&recs, day.0, day.1);
        let w = within(&recs, week.0, week.1);
        let mo = within(&recs, month.0, month.1);
        assert_eq!(v["daily"], window(&d), "daily {day:?}: {v}");
        assert_eq!(v["weekly"], window(&w), "weekly {week:?}: {v}");
        assert_eq!(v["monthly"], window(&mo), "monthly {month:?}: {v}");
        let t = Tot::of(mo.iter().copied());
        assert_eq!(v["total_requests"], json!(t.requests));
        assert_eq!(v["total_tokens"], json!(t.tokens()));
        assert_eq!(v["total_credits_used"], json!(credits(t.charged)));
        assert_eq!(
            v["credits_remaining"],
            json!(credits(GRANT_NANOS - all_charged))
        );
        assert_eq!(v["currency"], "USD");
        (d.len(), w.len(), mo.len())
    };
    m.clock.set(at("2025-12-28T20:00:00Z"));
    let v = m.user("/v1/usage").await;
    let n = check_usage(
        &v,
        ("2025-12-28T00:00:00Z", "2025-12-29T00:00:00Z"),
        ("2025-12-22T00:00:00Z", "2025-12-29T00:00:00Z"),
        ("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    );
    assert_eq!(
        n,
        (1, 1, 3),
        "23:59:59.999 on Sunday is the old week; 00:00 Monday the new"
    );

    m.clock.set(at("2026-01-01T12:00:00Z"));
    let v = m.user("/v1/usage").await;
    let n = check_usage(
        &v,
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),
        ("2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
    );
    assert_eq!(n, (1, 4, 3), "ISO week 1 of 2026 spans the year end");
    assert_eq!(v["period_start"], "2026-01-01T00:00:00Z");
    assert_eq!(v["period_end"], "2026-01-31T23:59:59Z");
    assert_eq!(v["daily"]["success_count"], json!(0));
    // Days up to today, and later days that already have usage; newest first.
    let dates: Vec<&str> = v["daily_breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["date"].as_str().unwrap())
        .collect();
    assert_eq!(dates, ["2026-01-05", "2026-01-04", "2026-01-01"]);
    let d4 = Tot::of(within(
        &recs,
        "2026-01-04T00:00:00Z",
        "2026-01-05T00:00:00Z",
    ));
    assert_eq!(
        v["daily_breakdown"][1],
        json!({"date": "2026-01-04", "requests": 1, "tokens": d4.tokens(), "credits": credits(d4.charged)})
    );

    m.clock.set(at("2028-02-29T15:00:00Z"));
    let v = m.user("/v1/usage").await;
    let n = check_usage(
        &v,
        ("2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"),
        ("2028-02-28T00:00:00Z", "2028-03-06T00:00:00Z"),
        ("2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"),
    );
    assert_eq!(n, (2, 4, 3), "the leap day holds 00:00:00 and 23:59:59.999");
    assert_eq!(v["period_end"], "2028-02-29T23:59:59Z");
    assert_eq!(v["daily_breakdown"].as_array().unwrap().len(), 29);
    assert_eq!(v["daily_breakdown"][0]["date"], "2028-02-29");
    assert_eq!(v["daily_breakdown"][0]["requests"], json!(2));

    m.clock.set(at("2028-03-31T23:59:59.999Z"));
    let v = m.user("/v1/usage").await;
    let n = check_usage(
        &v,
        ("2028-03-31T00:00:00Z", "2028-04-01T00:00:00Z"),
        ("2028-03-27T00:00:00Z", "2028-04-03T00:00:00Z"),
        ("2028-03-01T00:00:00Z", "2028-04-01T00:00:00Z"),
    );
    assert_eq!(n, (1, 2, 2));
    m.clock.set(at("2028-04-01T00:00:00Z"));
    let v = m.user("/v1/usage").await;
    let n = check_usage(
        &v,
        ("2028-04-01T00:00:00Z", "2028-04-02T00:00:00Z"),
        ("2028-03-27T00:00:00Z", "2028-04-03T00:00:00Z"),
        ("2028-04-01T00:00:00Z", "2028-05-01T00:00:00Z"),
    );
    assert_eq!(n, (1, 2, 1), "a new month starts at 00:00:00.000");

    // New York (UTC-5 in February): the local leap day runs 05:00Z to 05:00Z.
    m.clock.set(at("2028-03-01T03:00:00Z"));
    let v = m.user("/v1/usage?timezone=America/New_York").await;
    let n = check_usage(
        &v,
        ("2028-02-29T05:00:00Z", "2028-03-01T05:00:00Z"),
        ("2028-02-28T05:00:00Z", "2028-03-06T05:00:00Z"),
        ("2028-02-01T05:00:00Z", "2028-03-01T05:00:00Z"),
    );
    assert_eq!(n, (2, 4, 4));
    assert_eq!(v["period_start"], "2028-02-01T00:00:00-05:00");
    assert_eq!(v["period_end"], "2028-02-29T23:59:59-05:00");

    // ---- /v1/usage/models ----
    let v = m
        .user("/v1/usage/models?start=2025-01-01&end=2028-12-31")
        .await;
    let mut expect: BTreeMap<&str, Vec<&Rec>> = BTreeMap::new();
    for r in &recs {
        expect.entry(r.model.as_str()).or_default().push(r);
    }
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), expect.len());
    let mut last = i64::MAX;
    for row in rows {
        let t = Tot::of(expect[row["model"].as_str().unwrap()].iter().copied());
        assert_eq!(
            row,
            &json!({"model": row["model"], "requests": t.requests, "prompt_tokens": t.input,
                    "completion_tokens": t.output, "total_tokens": t.tokens(), "credits_used": credits(t.charged)})
        );
        assert!(t.charged <= last, "most credits first");
        last = t.charged;
    }
    m.clock.set(at("2028-02-29T15:00:00Z"));
    let v = m.user("/v1/usage/models").await;
    let models: BTreeSet<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        models,
        BTreeSet::from(["gpt-4o", "claude-sonnet-4-20250514", "gpt-4o-mini"]),
        "the billing month only"
    );

    // ---- ElectronHub ----
    let v = m.user("/v1/user/models").await;
    assert_eq!(v["total_consumption"], usd(all_charged));
    let models = v["models"].as_object().unwrap();
    assert_eq!(models.len(), expect.len());
    for (model, rs) in &expect {
        let t = Tot::of(rs.iter().copied());
        let owned_by = if rs[0].owned_by.is_empty() {
            &rs[0].provider
        } else {
            &rs[0].owned_by
        };
        assert_eq!(
            models[*model],
            json!({"requests": t.requests, "input_tokens": t.input, "output_tokens": t.output,
                   "total_cost": usd(t.charged), "owned_by": owned_by}),
            "{model}"
        );
    }
    assert_eq!(models["gpt-4o"]["owned_by"], "openai");
    assert_eq!(models["claude-sonnet-4-20250514"]["owned_by"], "anthropic");
    let latest = recs.iter().max_by_key(|r| r.t).unwrap();
    let last_updated = chrono::DateTime::from_timestamp_millis(latest.finished)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(v["last_updated"], json!(last_updated));

    m.clock.set(at("2028-03-01T12:00:00Z"));
    let v = m.user("/v1/user/me?days=3").await;
    let all = Tot::of(&recs);
    assert_eq!(
        v["usage"],
        json!({"input_tokens": all.input, "output_tokens": all.output})
    );
    assert_eq!(v["credits"], usd(GRANT_NANOS - all_charged));
    assert_eq!(
        v["history"],
        json!([{"date": "2028-02-28", "requests": 1}, {"date": "2028-02-29", "requests": 2}, {"date": "2028-03-01", "requests": 1}])
    );
    let mut endpoints: BTreeMap<String, i64> =
        ["chat.completions", "embeddings", "messages", "responses"]
            .iter()
            .map(|e| (e.to_string(), 0))
            .collect();
    for r in &recs {
        *endpoints.get_mut(&r.endpoint).unwrap() += 1;
    }
    assert_eq!(v["endpoints"], json!(endpoints));
    assert_eq!(endpoints["messages"], 2);
    // Kolkata (+05:30): its local days are read with minute rollups at the edges.
    let v = m.user("/v1/user/me?days=3&timezone=Asia/Kolkata").await;
    assert_eq!(
        v["history"],
        json!([{"date": "2028-02-28", "requests": 1}, {"date": "2028-02-29", "requests": 1}, {"date": "2028-03-01", "requests": 2}])
    );

    // ---- Runtype ----
    let v = m
        .user("/v1/model-usage?startDate=2025-12-22&endDate=2026-01-11&granularity=week")
        .await;
    assert_eq!(v["meta"]["startDate"], "2025-12-22");
    assert_eq!(v["meta"]["endDate"], "2026-01-11");
    assert_eq!(v["meta"]["granularity"], "week");
    assert_eq!(v["meta"]["period"], "custom");
    let series: Vec<(String, i64)> = v["timeSeries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["date"].as_str().unwrap().to_string(),
                p["requests"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        series,
        [
            ("2025-12-22".to_string(), 1),
            ("2025-12-29".to_string(), 4),
            ("2026-01-05".to_string(), 1)
        ]
    );
    let range = within(&recs, "2025-12-22T00:00:00Z", "2026-01-12T00:00:00Z");
    for (i, (from, to)) in [
        ("2025-12-22T00:00:00Z", "2025-12-29T00:00:00Z"),
        ("2025-12-29T00:00:00Z", "2026-01-05T00:00:00Z"),
        ("2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"),
    ]
    .iter()
    .enumerate()
    {
        let t = Tot::of(within(&recs, from, to));
        assert_eq!(
            v["timeSeries"][i],
            json!({"cost": usd(t.cost), "date": series[i].0, "requests": t.requests, "tokens": t.tokens()})
        );
    }
    let t = Tot::of(range.iter().copied());
    let plat = Tot::of(range.iter().copied().filter(|r| r.source == "platform"));
    let user = Tot::of(range.iter().copied().filter(|r| r.source == "user"));
    assert!(user.requests == 1 && plat.requests == 5);
    assert_eq!(
        v["summary"],
        json!({"totalCost": usd(t.cost), "totalRequests": t.requests, "totalTokens": t.tokens(),
               "platformCost": usd(plat.cost), "platformTokens": plat.tokens(),
               "userCost": usd(user.cost), "userTokens": user.tokens()})
    );
    let by_model = v["usageByModel"].as_object().unwrap();
    assert_eq!(by_model.len(), 4);
    for (model, stats) in by_model {
        let rs: Vec<&Rec> = range
            .iter()
            .copied()
            .filter(|r| &r.model == model)
            .collect();
        let t = Tot::of(rs.iter().copied());
        let avg = (2 * t.cost + t.requests).div_euclid(2 * t.requests);
        assert_eq!(
            stats,
            &json!({"avgCostPerRequest": usd(avg), "modelId": model, "provider": rs[0].provider,
                    "requestCount": t.requests, "totalCost": usd(t.cost), "totalTokens": t.tokens(),
                    "modelName": stats["modelName"], "modelConfigId": cfg_id(&rs[0].provider, model)})
        );
    }
    assert_eq!(by_model["gpt-4o"]["modelName"], "GPT-4o");

    let series = |v: &Value| -> Vec<i64> {
        v["timeSeries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_i64().unwrap())
            .collect()
    };
    let v = m
        .user("/v1/model-usage?startDate=2028-02-28&endDate=2028-03-01")
        .await;
    assert_eq!(series(&v), [1, 2, 1]);
    let v = m
        .user("/v1/model-usage?startDate=2028-02-28&endDate=2028-03-01&timezone=Asia/Kolkata")
        .await;
    assert_eq!(series(&v), [1, 1, 2], "{v}");
    let v = m
        .user("/v1/model-usage?startDate=2028-02-01&endDate=2028-04-30&granularity=month")
        .await;
    assert_eq!(series(&v), [3, 2, 1]);
    assert_eq!(v["timeSeries"][1]["date"], "2028-03-01");
    let v = m
        .user("/v1/model-usage?startDate=2028-02-29&endDate=2028-02-29&granularity=hour")
        .await;
    let s = series(&v);
    assert_eq!((s.len(), s[0], s[23], s.iter().sum::<i64>()), (24, 1, 1, 2));
    assert_eq!(v["timeSeries"][23]["date"], "2028-02-29T23:00:00Z");
    m.clock.set(at("2028-03-01T12:00:00Z"));
    let v = m.user("/v1/model-usage?period=last_7_days").await;
    assert_eq!(
        (
            v["meta"]["startDate"].as_str(),
            v["meta"]["endDate"].as_str()
        ),
        (Some("2028-02-24"), Some("2028-03-01"))
    );
    assert_eq!(
        series(&v),
        [0, 0, 0, 0, 1, 2, 1],
        "empty days appear with zeros"
    );
    let gpt4o = cfg_id("mock", "gpt-4o");
    let v = m.user(&format!("/v1/model-usage?startDate=2025-01-01&endDate=2028-12-31&granularity=month&modelConfigId={gpt4o}")).await;
    let want = Tot::of(recs.iter().filter(|r| r.model == "gpt-4o"));
    assert_eq!(v["summary"]["totalRequests"], json!(want.requests));
    assert_eq!(v["summary"]["totalCost"], usd(want.cost));
    assert_eq!(v["usageByModel"].as_object().unwrap().len(), 1);

    // Details: newest first, paged by cursor until the end.
    let mut seen = Vec::new();
    let mut path = format!("/v1/model-usage/{gpt4o}?limit=2");
    loop {
        let v = m.user(&path).await;
        assert_eq!(
            v["modelConfig"],
            json!({"id": gpt4o, "modelId": "gpt-4o", "provider": "mock", "displayName": "GPT-4o"})
        );
        for u in v["recentUsage"].as_array().unwrap() {
            seen.push(u["id"].as_str().unwrap().to_string());
        }
        if v["meta"]["hasMore"] == json!(false) {
            break;
        }
        path = format!(
            "/v1/model-usage/{gpt4o}?limit=2&cursor={}",
            v["meta"]["nextCursor"].as_str().unwrap()
        );
    }
    let mut want: Vec<&Rec> = recs.iter().filter(|r| r.model == "gpt-4o").collect();
    want.reverse();
    assert_eq!(seen, want.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    let v = m.user(&format!("/v1/model-usage/{gpt4o}?limit=1")).await;
    let b6 = rec("b6");
    assert_eq!(
        v["recentUsage"][0],
        json!({"id": b6.id, "timestamp": "2028-04-01T00:00:00.000Z", "promptTokens": b6.input,
               "completionTokens": b6.output, "totalTokens": b6.input + b6.output,
               "estimatedCost": usd(b6.cost), "executionTime": v["recentUsage"][0]["executionTime"], "status": "success"})
    );

    // ---- export ----
    let (ct, body) = m.text("/v1/usage/export?format=json").await;
    assert_eq!(ct, "application/json");
    let arr: Vec<Value> = serde_json::from_str(&body).unwrap();
    let ids_of = |rows: &[Value]| {
        rows.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids_of(&arr),
        recs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "oldest first, all of them"
    );
    assert_eq!(arr[0]["created_at"], "2025-12-28T23:59:59.999Z");
    assert_eq!(arr[0]["cost_nanos"], json!(recs[0].cost));
    let (ct, body) = m.text("/v1/usage/export?format=ndjson&model=gpt-4o").await;
    assert_eq!(ct, "application/x-ndjson");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len() as i64,
        Tot::of(recs.iter().filter(|r| r.model == "gpt-4o")).requests
    );
    let (ct, body) = m
        .text(&format!("/v1/usage/export?format=csv&key_id={}", m.key2_id))
        .await;
    assert_eq!(ct, "text/csv; charset=utf-8");
    let rows = parse_csv(&body);
    assert!(body.ends_with("\r\n"));
    assert_eq!(rows[0][0], "request_id");
    let want: Vec<&Rec> = recs.iter().filter(|r| r.key == m.key2_id).collect();
    assert_eq!(rows.len(), want.len() + 1);
    let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    for (row, r) in rows[1..].iter().zip(&want) {
        assert_eq!(row[col("request_id")], r.id);
        assert_eq!(row[col("input_tokens")], r.input.to_string());
        assert_eq!(row[col("cost_nanos")], r.cost.to_string());
        assert_eq!(row.len(), rows[0].len());
    }
    let (_, body) = m
        .text("/v1/usage/export?format=json&start=2028-02-29&end=2028-02-29")
        .await;
    let arr: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ids_of(&arr),
        [ids["b2"].clone(), ids["b3"].clone()],
        "dates are whole days, end inclusive"
    );
    let (_, body) = m
        .text("/v1/usage/export?format=json&start=2028-02-29&end=2028-02-29&timezone=Asia/Kolkata")
        .await;
    let arr: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(ids_of(&arr), [ids["b2"].clone()]);

    // ---- OpenAI organization usage (admin; every account) ----
    let every = m.records(None).await;
    assert_eq!(every.len(), 13);
    let secs = |s: &str| at(s) / 1000;
    let (s0, s3) = (secs("2028-02-28T00:00:00Z"), secs("2028-03-02T00:00:00Z"));
    let mut buckets = Vec::new();
    let mut path = format!("/v1/organization/usage/completions?start_time={s0}&end_time={s3}&bucket_width=1d&group_by=model&group_by=project_id&limit=2");
    loop {
        let v = m.admin(&path).await;
        assert_eq!(v["object"], "page");
        buckets.extend(v["data"].as_array().unwrap().clone());
        if v["has_more"] == json!(false) {
            assert_eq!(v["next_page"], Value::Null);
            break;
        }
        path = format!("/v1/organization/usage/completions?start_time={s0}&end_time={s3}&bucket_width=1d&group_by=model&group_by=project_id&limit=2&page={}", v["next_page"].as_str().unwrap());
    }
    assert_eq!(buckets.len(), 3);
    for (i, b) in buckets.iter().enumerate() {
        let (a, z) = (s0 + i as i64 * 86_400, s0 + (i as i64 + 1) * 86_400);
        assert_eq!(
            (
                b["object"].as_str(),
                b["start_time"].as_i64(),
                b["end_time"].as_i64()
            ),
            (Some("bucket"), Some(a), Some(z))
        );
        let mut groups: BTreeMap<(String, String), Vec<&Rec>> = BTreeMap::new();
        for r in every.iter().filter(|r| r.t >= a * 1000 && r.t < z * 1000) {
            groups
                .entry((r.account.clone(), r.model.clone()))
                .or_default()
                .push(r);
        }
        let results = b["results"].as_array().unwrap();
        assert_eq!(results.len(), groups.len(), "{b}");
        for res in results {
            let key = (
                res["project_id"].as_str().unwrap().to_string(),
                res["model"].as_str().unwrap().to_string(),
            );
            let t = Tot::of(groups[&key].iter().copied());
            assert_eq!(
                res,
                &json!({"object": "organization.usage.completions.result", "input_tokens": t.input,
                        "output_tokens": t.output, "input_cached_tokens": t.cached, "input_audio_tokens": 0,
                        "output_audio_tokens": 0, "num_model_requests": t.requests, "project_id": key.0,
                        "user_id": null, "api_key_id": null, "model": key.1, "batch": null, "service_tier": null})
            );
        }
    }
    assert!(buckets[1]["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["project_id"] == json!(m.other_account)));
    let v = m.admin(&format!("/v1/organization/costs?start_time={s0}&end_time={s3}&group_by=line_item&project_ids={}", m.app.account_id)).await;
    for (i, b) in v["data"].as_array().unwrap().iter().enumerate() {
        let a = (s0 + i as i64 * 86_400) * 1000;
        let mut groups: BTreeMap<&str, Vec<&Rec>> = BTreeMap::new();
        for r in recs.iter().filter(|r| r.t >= a && r.t < a + 86_400_000) {
            groups.entry(r.model.as_str()).or_default().push(r);
        }
        let got: BTreeMap<&str, Value> = b["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["line_item"].as_str().unwrap(), r["amount"].clone()))
            .collect();
        let want: BTreeMap<&str, Value> = groups
            .iter()
            .map(|(k, rs)| {
                (
                    *k,
                    json!({"value": usd(Tot::of(rs.iter().copied()).charged), "currency": "usd"}),
                )
            })
            .collect();
        assert_eq!(got, want, "costs bucket {i}");
    }
    let v = m.admin(&format!("/v1/organization/usage/completions?start_time={}&end_time={}&bucket_width=1h&api_key_ids={}", secs("2028-02-29T23:00:00Z"), secs("2028-03-01T01:00:00Z"), m.app.key_id)).await;
    let n: Vec<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["results"][0]["num_model_requests"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(
        n,
        [1, 1],
        "b3 at 23:59:59.999 and b4 at 00:00 in their own hours"
    );
    let v = m.admin(&format!("/v1/organization/usage/completions?start_time={}&end_time={}&bucket_width=1m&account_id={}", secs("2028-02-29T23:59:00Z"), secs("2028-03-01T00:01:00Z"), m.app.account_id)).await;
    let n: Vec<i64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["results"][0]["num_model_requests"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(n, [1, 1]);
}

/// A minimal RFC 4180 reader for the test.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them_and_scope_is_enforced() {
    let clock = ManualClock::new(at("2028-02-29T12:00:00Z"));
    let app = spawn_app_with(Spawn {
        clock: Some(clock),
        grant_usd: Some("1"),
        ..Spawn::default()
    })
    .await;
    let (other_account, other_key_id, _) =
        create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    let get = |key: String, path: String, anthropic: bool| {
        let req = app.http.get(format!("{}{path}", app.base));
        let req = if anthropic {
            req.header("x-api-key", key)
        } else {
            req.bearer_auth(key)
        };
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let user = app.user_key.clone();
    let cases: Vec<(&str, &str)> = vec![
        ("/v1/usage?timezone=Mars/Olympus_Mons", "timezone"),
        ("/v1/usage/models?start=yesterday", "start"),
        ("/v1/usage/models?start=2028-03-01&end=2028-02-01", "end"),
        ("/v1/model-usage?startDate=2027-02-29", "startDate"),
        ("/v1/model-usage?endDate=2028-13-01", "endDate"),
        (
            "/v1/model-usage?startDate=2028-03-02&endDate=2028-03-01",
            "startDate",
        ),
        ("/v1/model-usage?period=forever", "period"),
        ("/v1/model-usage?granularity=year", "granularity"),
        (
            "/v1/model-usage?startDate=1970-01-01&endDate=2028-01-01&granularity=hour",
            "granularity",
        ),
        ("/v1/model-usage/cfg_000000000000?limit=0", "limit"),
        ("/v1/model-usage/cfg_000000000000?cursor=nope", "cursor"),
        ("/v1/usage/export?format=xml", "format"),
        ("/v1/usage/export?start=2028-01-01T00:00:00", "start"),
        ("/v1/user/me?days=0", "days"),
    ];
    for (path, param) in &cases {
        let (status, v) = get(user.clone(), path.to_string(), false).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["param"], json!(param), "{path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{path}");
    }
    // Anthropic-style callers get Anthropic's shape.
    let (status, v) = get(user.clone(), "/v1/model-usage?period=forever".into(), true).await;
    assert_eq!(
        (status, v["type"].as_str(), v["error"]["type"].as_str()),
        (400, Some("error"), Some("invalid_request_error"))
    );

    let org_cases: Vec<(&str, &str)> = vec![
        ("/v1/organization/usage/completions", "start_time"),
        (
            "/v1/organization/usage/completions?start_time=100&end_time=50",
            "end_time",
        ),
        (
            "/v1/organization/usage/completions?start_time=0&bucket_width=1w",
            "bucket_width",
        ),
        (
            "/v1/organization/costs?start_time=0&bucket_width=1h",
            "bucket_width",
        ),
        (
            "/v1/organization/usage/completions?start_time=0&bucket_width=1h&limit=169",
            "limit",
        ),
        (
            "/v1/organization/usage/completions?start_time=0&group_by=colour",
            "group_by",
        ),
        (
            "/v1/organization/costs?start_time=0&group_by=model",
            "group_by",
        ),
        (
            "/v1/organization/usage/completions?start_time=0&page=bogus",
            "page",
        ),
    ];
    for (path, param) in &org_cases {
        let (status, v) = get(app.admin_key.clone(), path.to_string(), false).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["param"], json!(param), "{path}: {v}");
    }
    // A user key on the organization endpoints: 403, in the caller's shape.
    for path in [
        "/v1/organization/usage/completions?start_time=0",
        "/v1/organization/costs?start_time=0",
    ] {
        let (status, v) = get(user.clone(), path.into(), false).await;
        assert_eq!(
            (
                status,
                v["error"]["code"].as_str(),
                v["error"]["type"].as_str()
            ),
            (403, Some("permission_denied"), Some("permission_error"))
        );
        let (status, v) = get(user.clone(), path.into(), true).await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (403, Some("permission_error"))
        );
    }
    // Ids outside the caller's account: 404, as if they did not exist.
    let not_found: Vec<String> = vec![
        format!("/v1/usage?account_id={other_account}"),
        format!("/v1/usage?key_id={other_key_id}"),
        format!("/v1/usage/export?key_id={other_key_id}"),
        "/v1/user/models?key_id=key_doesnotexist".into(),
        "/v1/model-usage/cfg_000000000000".into(),
        "/v1/model-usage?modelConfigId=cfg_000000000000".into(),
        "/v1/model-usage/not-a-config".into(),
    ];
    for path in &not_found {
        let (status, v) = get(user.clone(), path.clone(), false).await;
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{path}");
    }
    let (status, v) = get(
        user.clone(),
        format!("/v1/user/me?account_id={other_account}"),
        true,
    )
    .await;
    assert_eq!(
        (status, v["error"]["type"].as_str()),
        (404, Some("not_found_error"))
    );
    // An admin may read any account, but not one that does not exist.
    let (status, v) = get(
        app.admin_key.clone(),
        format!("/v1/usage?account_id={other_account}"),
        false,
    )
    .await;
    assert_eq!((status, v["total_requests"].as_i64()), (200, Some(0)));
    let (status, _) = get(
        app.admin_key.clone(),
        "/v1/usage?account_id=acct_nope".into(),
        false,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get(
        app.admin_key.clone(),
        "/v1/organization/costs?start_time=0&account_id=acct_nope".into(),
        false,
    )
    .await;
    assert_eq!(status, 404);
    // No key at all: 401 before anything else.
    let r = app
        .http
        .get(format!("{}/v1/usage?timezone=bad", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The OpenAPI document lists every endpoint.
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/v1/usage",
        "/v1/usage/models",
        "/v1/usage/export",
        "/v1/user/models",
        "/v1/user/me",
        "/v1/model-usage",
        "/v1/model-usage/{modelConfigId}",
        "/v1/organization/usage/completions",
        "/v1/organization/costs",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi.json lacks {p}");
    }
}

/// Many records, inserted straight into the store (ties on the same millisecond, more than one
/// export page): the export streams each exactly once, in order, in every format.
#[tokio::test]
async fn export_pages_through_thousands_of_records_exactly_once() {
    let mock_dir = tempfile::tempdir().unwrap();
    let config: Config = load_config(mock_dir.path(), "http://127.0.0.1:9", "");
    let app = Application::build(config).await.unwrap();
    let admin_key = app.bootstrap_admin_key.clone().unwrap().key;
    let store = app.state.engine.store.clone();
    let base = format!("http://{}", app.local_addr().unwrap());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let (account, key_id, user_key) = create_account_and_key(&http, &base, &admin_key).await;
    let t0 = at("2028-02-29T00:00:00Z");
    let n = 2_345;
    let batch: Vec<UsageRecord> = (0..n)
        .map(|i| UsageRecord {
            request_id: format!("req_{:06}", (i * 7919) % n),
            // Runs of five records share a millisecond.
            created_at_ms: t0 + (i / 5) * 1000,
            finished_at_ms: t0 + (i / 5) * 1000 + 20,
            account_id: account.clone(),
            key_id: key_id.clone(),
            endpoint: tollgate::record::Endpoint::ChatCompletions,
            model_requested: if i % 3 == 0 {
                "gpt-4o"
            } else {
                "model, \"quoted\""
            }
            .into(),
            model_served: "gpt-4o".into(),
            provider: "mock".into(),
            owned_by: "openai".into(),
            source: tollgate::record::Source::Platform,
            input_tokens: i,
            output_tokens: 1,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_nanos: i * 10,
            charged_nanos: i * 10,
            price_input: 0,
            price_output: 0,
            price_cached_input: 0,
            price_cache_write: 0,
            status: Status::Success,
            http_status: 200,
            error_code: None,
            latency_ms: 20,
            ttft_ms: None,
            streamed: false,
            provenance: Provenance::Provider,
            anomaly: None,
            user: None,
            tags: Default::default(),
            price_version: None,
            fingerprint: None,
            conversation: None,
        })
        .collect();
    let mut expected: Vec<(i64, String)> = batch
        .iter()
        .map(|r| (r.created_at_ms, r.request_id.clone()))
        .collect();
    expected.sort();
    assert_eq!(store.insert_usage(batch).await.unwrap(), n as usize);
    let fetch = |format: &str| {
        let req = http
            .get(format!("{base}/v1/usage/export?format={format}"))
            .bearer_auth(&user_key);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let want: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();
    let arr: Vec<Value> = serde_json::from_str(&fetch("json").await).unwrap();
    assert_eq!(
        arr.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        want
    );
    let nd = fetch("ndjson").await;
    assert_eq!(nd.lines().count(), n as usize);
    let rows = parse_csv(&fetch("csv").await);
    assert_eq!(rows.len(), n as usize + 1);
    assert_eq!(
        rows[1..].iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        want
    );
    let model_col = rows[0].iter().position(|h| h == "model_requested").unwrap();
    assert!(rows[1..]
        .iter()
        .any(|r| r[model_col] == "model, \"quoted\""));
    // And the rollup-backed totals agree with the records.
    let v: Value = http
        .get(format!("{base}/v1/user/models"))
        .bearer_auth(&user_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total_in: i64 = (0..n).sum();
    let got: i64 = v["models"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["input_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(got, total_in);
}

#[tokio::test]
async fn electronhub_logs_page_newest_first_and_stay_in_the_account() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for (i, mock) in [
        json!({}),
        json!({"error_status": 500}),
        json!({"output_tokens": 3}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = app.chat_body("gpt-4o-mini", i == 2);
        body["mock"] = mock;
        let r = app.post_bearer("/v1/chat/completions", &body).await;
        ids.push(request_id(&r));
        let _ = r.bytes().await;
        // Distinct milliseconds keep the expected order unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let get = |q: String, key: String| {
        let (http, base) = (app.http.clone(), app.base.clone());
        async move {
            let r = http
                .get(format!("{base}/v1/user/logs{q}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let page1 = get("?limit=2".into(), app.user_key.clone()).await;
    let rows = page1["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["id"].as_str(), rows[1]["id"].as_str()),
        (Some(ids[2].as_str()), Some(ids[1].as_str()))
    );
    assert_eq!(page1["has_more"], json!(true));
    assert_eq!(rows[1]["status"], "error");
    assert_eq!(rows[0]["route"], "chat.completions");
    assert_eq!(rows[0]["output_tokens"], json!(3));
    let last4 = &app.user_key[app.user_key.len() - 4..];
    assert!(rows[0]["key"].as_str().unwrap().ends_with(last4));
    assert!(
        !rows[0].to_string().contains(&app.user_key),
        "the key itself is never shown"
    );
    let rec = app.record(&ids[2]).await.unwrap();
    assert_eq!(
        rows[0]["credits"].as_f64().unwrap(),
        rec["charged_nanos"].as_i64().unwrap() as f64 / 1e9
    );
    assert_eq!(
        rows[0]["timestamp"],
        json!(rec["created_at_ms"].as_i64().unwrap() / 1000)
    );
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let page2 = get(format!("?limit=2&cursor={cursor}"), app.user_key.clone()).await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2["data"][0]["id"], json!(ids[0]));
    assert_eq!(page2["has_more"], json!(false));
    // Another account sees none of it.
    let (_, _, other) = create_account_and_key(&app.http, &app.base, &app.admin_key).await;
    assert!(get(String::new(), other).await["data"]
        .as_array()
        .unwrap()
        .is_empty());
}
