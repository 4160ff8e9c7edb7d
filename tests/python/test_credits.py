"""Credits: each request debits its account by exactly the metered cost, the balance shown to the
caller follows, and an unfunded account is refused (402) before anything is forwarded."""

import httpx
import pytest

from conftest import PRICES, assert_record_matches_ledger, cost_nanos


@pytest.fixture
def funded(gateway):
    """A fresh account with 0.01 USD (10,000,000 nano-USD) and a key for it."""
    account_id = gateway.create_account("credits-test", grant_usd="0.01")
    key = gateway.create_key("credits-key", account_id=account_id)
    return account_id, key["key"]


def credits_view(gateway, key):
    r = httpx.get(gateway.url + "/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def test_balance_is_debited_by_exactly_the_cost(gateway, mock, funded):
    account_id, key = funded
    grant = 10_000_000
    view = credits_view(gateway, key)
    assert view["balance_micro"] == 10_000 and view["balance_credits"] == 10_000

    spent = 0
    headers = {"Authorization": f"Bearer {key}"}
    for words, out in [(3, 16), (7, 5), (1, 40)]:
        r = httpx.post(
            gateway.url + "/v1/chat/completions",
            json={
                "model": "gpt-4o",
                "max_tokens": 50,  # keeps the hold (maximum cost) within the small grant
                "messages": [{"role": "user", "content": " ".join(["w"] * words)}],
                "mock": {"output_tokens": out},
            },
            headers=headers,
        )
        assert r.status_code == 200, r.text
        rid = r.headers["x-request-id"]
        entry = mock.ledger_for(rid)
        rec = gateway.record_for(rid)
        assert_record_matches_ledger(rec, entry, "gpt-4o")
        assert rec["cost_nanos"] == cost_nanos(words + 1, out, 0, 0, PRICES["gpt-4o"])
        spent += rec["charged_nanos"]
        # A non-streamed response is settled before it leaves: the header is the balance left,
        # in credits (one credit = one micro-USD), rounded down.
        assert int(r.headers["x-credits-remaining"]) == (grant - spent) // 1000

    view = credits_view(gateway, key)
    assert view["balance_micro"] == (grant - spent) // 1000
    assert view["uncollected_micro"] == 0

    audit = gateway.admin.get(f"/admin/accounts/{account_id}/credits")
    assert audit.status_code == 200, audit.text
    audit = audit.json()
    assert audit["grants_nanos"] == grant
    assert audit["charges_nanos"] == spent == audit["charges_nanos_records"]
    assert audit["balance_nanos"] == grant - spent
    assert audit["live_balance_nanos"] == grant - spent
    assert audit["consistent"] is True


def test_stream_is_debited_by_its_cost(gateway, mock, funded):
    account_id, key = funded
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d"}],
            "mock": {"cached_tokens": 2},
        },
        headers={"x-api-key": key},
    ) as r:
        assert r.status_code == 200
        rid = r.headers["request-id"]
        # Sent before the cost is known: what is available with the maximum cost held.
        assert int(r.headers["x-credits-remaining"]) < 10_000
        r.read()
    entry = mock.ledger_for(rid)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "claude-sonnet-4-20250514")
    # (5-2) * 3e9 + 2 * 3e8 + 16 * 1.5e10 = 2.496e11 -> 249,600
    assert rec["cost_nanos"] == 249_600
    view = credits_view(gateway, key)
    assert view["balance_micro"] == (10_000_000 - 249_600) // 1000
    assert view["uncollected_micro"] == 0, "the stream's hold was not released"


def test_failed_requests_cost_nothing(gateway, mock, funded):
    _, key = funded
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
              "mock": {"error_status": 500}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 500
    rec = gateway.record_for(r.headers["x-request-id"])
    assert rec["status"] == "error" and rec["charged_nanos"] == 0
    view = credits_view(gateway, key)
    assert view["balance_micro"] == 10_000 and view["uncollected_micro"] == 0


@pytest.mark.parametrize(
    "path,body,headers_of,shape",
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            lambda k: {"Authorization": f"Bearer {k}"},
            "openai",
        ),
        (
            "/v1/messages",
            {"model": "claude-sonnet-4-20250514", "max_tokens": 10,
             "messages": [{"role": "user", "content": "hi"}]},
            lambda k: {"x-api-key": k},
            "anthropic",
        ),
    ],
    ids=["bearer", "x-api-key"],
)
def test_unfunded_account_gets_402(gateway, mock, path, body, headers_of, shape):
    account_id = gateway.create_account("broke")
    key = gateway.create_key("broke-key", account_id=account_id)
    ledger_before = len(mock.ledger())
    r = httpx.post(gateway.url + path, json=body, headers=headers_of(key["key"]))
    assert r.status_code == 402, r.text
    err = r.json()
    if shape == "openai":
        assert err["error"]["code"] == "insufficient_balance"
        assert err["error"]["type"] == "billing_error"
    else:
        assert err == {"type": "error", "error": {"type": "billing_error",
                                                  "message": err["error"]["message"]}}
    # The answer says what the account has (nothing); the request is counted, charged nothing.
    assert r.headers["x-credits-remaining"] == "0"
    rec = gateway.record_for(r.headers["x-request-id"])
    assert rec["status"] == "refused" and rec["http_status"] == 402, rec
    assert rec["error_code"] == "insufficient_balance" and rec["charged_nanos"] == 0, rec
    assert gateway.records(account_id=account_id) == [rec]
    assert len(mock.ledger()) == ledger_before
