"""The admin view of usage records: who, in which order, and that concurrent traffic is metered
one record per request, each equal to the mock's ledger."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import assert_record_matches_ledger, expected_cost_from_ledger


@pytest.fixture
def fresh_key(gateway):
    return gateway.create_key("records-test")


def chat(base_url, key, content, **extra):
    r = httpx.post(
        base_url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
    )
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"]


def test_records_by_key_newest_first(gateway, fresh_key):
    rids = []
    for i in range(3):
        rids.append(chat(gateway.url, fresh_key["key"], "word " * (i + 1)))
        time.sleep(0.005)  # distinct created_at_ms, so the order is defined
    recs = gateway.records(key_id=fresh_key["id"])
    assert [r["request_id"] for r in recs] == rids[::-1]
    assert [r["input_tokens"] for r in recs] == [4, 3, 2]
    assert all(r["key_id"] == fresh_key["id"] for r in recs)
    assert all(r["account_id"] == gateway.account_id for r in recs)
    assert [r["request_id"] for r in gateway.records(key_id=fresh_key["id"], limit=2)] == rids[
        :0:-1
    ]
    assert gateway.records(account_id="acct_nobody") == []


def test_records_limit_is_validated(gateway):
    r = gateway.admin.get("/admin/requests", params={"limit": 0})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "limit"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_client_gives_up_before_the_response(gateway, mock, fresh_key, stream):
    """The client times out while the upstream is still working: the gateway finishes the
    exchange anyway and records it as cancelled, with the usage the upstream reported."""
    body = {
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": "slow answer please"}],
        "mock": {"latency_ms": 800},
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {fresh_key['key']}"},
            timeout=httpx.Timeout(5, read=0.2),
        )
    deadline = time.monotonic() + 5
    recs = []
    while time.monotonic() < deadline and not recs:
        recs = gateway.records(key_id=fresh_key["id"])
        time.sleep(0.05)
    assert len(recs) == 1, "the abandoned request was not recorded"
    rec = recs[0]
    entry = mock.ledger_for(rec["request_id"])
    assert entry["completed"] is True
    assert rec["status"] == "cancelled"
    assert rec["streamed"] is stream
    assert_record_matches_ledger(rec, entry, "gpt-4o")
    assert rec["input_tokens"] == 4 and rec["output_tokens"] == 16


def test_concurrent_requests_are_each_metered_once(gateway, mock, fresh_key):
    client = openai.OpenAI(base_url=gateway.v1, api_key=fresh_key["key"], max_retries=0)

    def one(i):
        words = " ".join(["w"] * (i % 7 + 1))
        extra = {"mock": {"output_tokens": i % 5 + 1, "chunk_delay_ms": 2}}
        if i % 2:
            s = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": words}],
                stream=True, extra_body=extra,
            )
            list(s)
            return s.response.headers["x-request-id"], i
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": words}], extra_body=extra,
        )
        return raw.headers["x-request-id"], i

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(24)))
    client.close()

    recs = {r["request_id"]: r for r in gateway.records(key_id=fresh_key["id"])}
    assert len(recs) == 24
    ledger = {e["request_id"]: e for e in mock.ledger() if e["request_id"] in recs}
    assert set(recs) == set(ledger) == {rid for rid, _ in results}
    total = 0
    for rid, i in results:
        entry = ledger[rid]
        assert entry["input_tokens"] == i % 7 + 2
        assert entry["output_tokens"] == i % 5 + 1
        assert_record_matches_ledger(recs[rid], entry, "gpt-4o-mini")
        assert recs[rid]["status"] == "success"
        total += expected_cost_from_ledger(entry, "gpt-4o-mini")
    assert sum(r["cost_nanos"] for r in recs.values()) == total
