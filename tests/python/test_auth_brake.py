"""The brake on repeated bad keys: after `limits.auth_failures_per_minute` invalid keys from one
client address in a minute, that address gets 429 (even with a valid key) until the minute ends;
other addresses are unaffected."""

import time

import httpx
import pytest

LIMIT = 3
BODY = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(extra_config=f"[limits]\nauth_failures_per_minute = {LIMIT}\n")


def client_from(address):
    # A fresh connection per request: the gateway closes keep-alive connections unannounced
    # after auth errors (see test_error_matrix.py::test_keep_alive_after_early_error).
    transport = httpx.HTTPTransport(
        local_address=address, limits=httpx.Limits(max_keepalive_connections=0)
    )
    return httpx.Client(transport=transport, timeout=10)


def test_bad_keys_brake_the_address(gw, mock):
    # The failures are counted per wall-clock minute: keep clear of a minute boundary.
    into_minute = time.time() % 60
    if into_minute > 55:
        time.sleep(61 - into_minute)
    url = gw.url + "/v1/chat/completions"
    good = {"Authorization": f"Bearer {gw.key}"}
    bad = {"Authorization": "Bearer tg-" + "b" * 43}
    ledger_before = len(mock.ledger())
    with client_from("127.0.0.3") as c:
        # Requests without a key are not guesses: they are not counted.
        for _ in range(LIMIT + 2):
            r = c.post(url, json=BODY)
            assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        for _ in range(LIMIT):
            r = c.post(url, json=BODY, headers=bad)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        # The address is now braked, whatever key it presents.
        for headers in (bad, good):
            r = c.post(url, json=BODY, headers=headers)
            assert r.status_code == 429, r.text
            err = r.json()["error"]
            assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
            assert r.headers["retry-after"] == "60"
            assert r.headers["x-request-id"].startswith("req_")
        # Anthropic-style callers get their own shape.
        r = c.post(gw.url + "/v1/messages", headers={"x-api-key": gw.key},
                   json={**BODY, "model": "claude-sonnet-4-20250514"})
        assert r.status_code == 429
        assert r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "rate_limit_error"
    assert len(mock.ledger()) == ledger_before, "a braked request reached the upstream"

    # Another client address is not affected.
    with client_from("127.0.0.4") as c:
        r = c.post(url, json=BODY, headers=good)
        assert r.status_code == 200, r.text
        assert gw.record_for(r.headers["x-request-id"])["status"] == "success"
