"""`GET /metrics` read by Prometheus's own parser (the `prometheus_client` package's OpenMetrics
parser): every counter equals the sum over the records behind it; the token guards it; off
means 404."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

TOKEN = "metrics-token-0123456789abcdef"


def scrape(gw, token=None) -> dict:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{gw.url}/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def total(families: dict, family: str, sample: str, **labels) -> float:
    f = families.get(family)
    if f is None:
        return 0
    return sum(
        s.value for s in f.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway()


def test_counters_equal_the_records(gw):
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=30)
    chat = {"model": "gpt-4o-mini", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hello metrics"}]}
    for _ in range(3):
        assert c.post("/v1/chat/completions", json=chat).status_code == 200
    with c.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as r:
        assert r.status_code == 200
        r.read()
    emb = c.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "abc"})
    assert emb.status_code == 200
    # Refused by the gateway itself: a model nobody serves.
    assert c.post("/v1/chat/completions",
                  json={**chat, "model": "no-such-model"}).status_code in (400, 404)

    records = gw.records()
    assert len(records) == 6
    deadline = time.monotonic() + 5
    while True:
        m = scrape(gw)
        if total(m, "tollgate_requests", "tollgate_requests_total") == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert total(m, "tollgate_requests", "tollgate_requests_total") == 6
    assert total(m, "tollgate_requests", "tollgate_requests_total",
                 endpoint="chat.completions", status="success", code="200") == 4
    assert total(m, "tollgate_requests", "tollgate_requests_total",
                 endpoint="embeddings", provider="mock", status="success") == 1
    refused = [r for r in records if r["status"] == "refused"]
    assert len(refused) == 1
    assert total(m, "tollgate_refusals", "tollgate_refusals_total",
                 reason=refused[0]["error_code"]) == 1
    for kind, field in [("input", "input_tokens"), ("output", "output_tokens"),
                        ("cached", "cached_tokens"), ("reasoning", "reasoning_tokens")]:
        assert total(m, "tollgate_tokens", "tollgate_tokens_total", type=kind) == \
            sum(r[field] for r in records), kind
    assert total(m, "tollgate_cost_nanousd", "tollgate_cost_nanousd_total") == \
        sum(r["cost_nanos"] for r in records)
    assert total(m, "tollgate_cost_nanousd", "tollgate_cost_nanousd_total",
                 model="gpt-4o-mini", provider="mock") == \
        sum(r["cost_nanos"] for r in records if r["model_served"] == "gpt-4o-mini")
    assert total(m, "tollgate_request_duration_seconds",
                 "tollgate_request_duration_seconds_count") == 6
    assert total(m, "tollgate_time_to_first_token_seconds",
                 "tollgate_time_to_first_token_seconds_count") == \
        sum(1 for r in records if r["ttft_ms"] is not None)
    assert total(m, "tollgate_requests_in_flight", "tollgate_requests_in_flight") == 0
    assert total(m, "tollgate_journal_backlog_records", "tollgate_journal_backlog_records") == 0
    assert total(m, "tollgate_store_batch_records", "tollgate_store_batch_records_sum") >= 6
    # Never per key or per account.
    text = httpx.get(f"{gw.url}/metrics").text
    assert gw.key_id not in text and gw.account_id not in text


def test_webhook_attempts_are_counted(start_gateway):
    gw = start_gateway("\n[webhooks]\nallow_private_targets = true\n")
    port = httpx.get(f"{gw.url}/health").status_code and 9  # discard port: connection refused
    r = httpx.post(f"{gw.url}/v1/webhooks", headers={"authorization": f"Bearer {gw.key}"},
                   json={"url": f"http://127.0.0.1:{port}/hook", "events": ["credits.low"]})
    assert r.status_code == 201, r.text
    hook = r.json()["id"]
    assert httpx.post(f"{gw.url}/v1/webhooks/{hook}/test",
                      headers={"authorization": f"Bearer {gw.key}"}).status_code == 202
    deadline = time.monotonic() + 10
    while total(scrape(gw), "tollgate_webhook_attempts", "tollgate_webhook_attempts_total",
                result="retrying") < 1:
        assert time.monotonic() < deadline, "no attempt counted"
        time.sleep(0.1)


def test_the_token_guards_metrics(start_gateway):
    gw = start_gateway(f'\n[metrics]\ntoken = "{TOKEN}"\n')
    assert httpx.get(f"{gw.url}/metrics").status_code == 401
    bad = httpx.get(f"{gw.url}/metrics", headers={"authorization": "Bearer wrong-token-0123456789"})
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_api_key"
    # A tollgate key is not the metrics token.
    assert httpx.get(f"{gw.url}/metrics",
                     headers={"authorization": f"Bearer {gw.key}"}).status_code == 401
    assert "tollgate_requests_in_flight" in scrape(gw, TOKEN)


def test_metrics_off_is_404(start_gateway):
    gw = start_gateway("\n[metrics]\nenabled = false\n")
    r = httpx.get(f"{gw.url}/metrics")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
