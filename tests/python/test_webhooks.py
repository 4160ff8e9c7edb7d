"""Webhooks through the public API, checked by an independent implementation of Standard
Webhooks (the `standardwebhooks` package): signatures, the same `webhook-id` on every retry,
retries after failures, 410 disabling the endpoint, secret rotation, private targets refused,
and validation errors naming the field."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

ALLOW_PRIVATE = "\n[webhooks]\nallow_private_targets = true\n"


class Receiver:
    """An HTTP receiver on port 0: records every request; answers with the statuses queued in
    `answers` (then 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n).decode()
                with receiver.lock:
                    receiver.requests.append(
                        {"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                         "at": time.monotonic()}
                    )
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return list(self.requests)
            time.sleep(0.05)
        raise AssertionError(f"expected {n} deliveries, got {len(self.requests)}")

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(ALLOW_PRIVATE)


def user(gw) -> httpx.Client:
    return httpx.Client(
        base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=30
    )


def create(gw, url, events=("credits.low",), **extra):
    r = user(gw).post("/v1/webhooks", json={"url": url, "events": list(events), **extra})
    assert r.status_code == 201, r.text
    return r.json()


def verify(secret: str, req: dict) -> dict:
    """Verifies with the independent implementation; returns the parsed body."""
    return Verifier(secret).verify(req["body"], req["headers"])


def test_created_then_a_test_event_arrives_signed(gw, receiver):
    hook = create(gw, receiver.url, events=["credits.low", "usage.threshold"],
                  settings={"usage_threshold_percent": 80, "credits_low_threshold": 1000})
    assert hook["id"].startswith("wh_")
    assert hook["secret"].startswith("whsec_")
    assert hook["active"] is True
    assert hook["events"] == ["credits.low", "usage.threshold"]
    assert hook["settings"] == {"usage_threshold_percent": 80, "credits_low_threshold": 1000}
    # The secret is shown once.
    got = user(gw).get(f"/v1/webhooks/{hook['id']}").json()
    assert "secret" not in got
    assert hook["id"] in [h["id"] for h in user(gw).get("/v1/webhooks").json()["data"]]

    r = user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 202, r.text
    event_id = r.json()["event_id"]
    [req] = receiver.wait(1)
    assert req["headers"]["webhook-id"] == event_id
    payload = verify(hook["secret"], req)
    assert payload["type"] == "webhook.test"
    assert payload["data"]["webhook_id"] == hook["id"]
    assert payload["timestamp"].endswith("Z")
    # A wrong secret does not verify.
    with pytest.raises(Exception):
        verify("whsec_" + "A" * 43 + "=", req)

    # The attempt is listed.
    deadline = time.monotonic() + 5
    while True:
        d = user(gw).get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
        if d:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert d[0]["event_id"] == event_id
    assert d[0]["status_code"] == 200
    assert d[0]["state"] == "succeeded"
    assert d[0]["event_type"] == "webhook.test"


def test_failures_are_retried_with_the_same_webhook_id(gw, receiver):
    receiver.answers = [500]
    hook = create(gw, receiver.url)
    r = user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 202
    first, second = receiver.wait(2, timeout=30)
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    # The first retry waits about 5 s.
    assert second["at"] - first["at"] >= 4.5
    verify(hook["secret"], second)
    d = user(gw).get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]
    assert [a["status_code"] for a in d[:2]] == [200, 500], d
    assert d[1]["error"] == "HTTP 500"


def test_410_disables_the_endpoint_and_says_why(gw, receiver):
    receiver.answers = [410]
    hook = create(gw, receiver.url)
    user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    receiver.wait(1)
    deadline = time.monotonic() + 5
    while True:
        got = user(gw).get(f"/v1/webhooks/{hook['id']}").json()
        if not got["active"]:
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
    assert "410" in got["disabled_reason"]
    r = user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 400, r.text
    # Re-activated, it delivers again.
    r = user(gw).patch(f"/v1/webhooks/{hook['id']}", json={"active": True})
    assert r.status_code == 200 and r.json()["active"] is True and "disabled_reason" not in r.json()
    assert user(gw).post(f"/v1/webhooks/{hook['id']}/test").status_code == 202
    receiver.wait(2)


def test_rotation_signs_with_both_secrets_for_the_overlap(gw, receiver):
    hook = create(gw, receiver.url)
    r = user(gw).post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != hook["secret"]
    user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    [req] = receiver.wait(1)
    assert len(req["headers"]["webhook-signature"].split(" ")) == 2
    verify(new, req)
    verify(hook["secret"], req)


def test_a_given_secret_is_used(gw, receiver):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    hook = create(gw, receiver.url, secret=secret)
    assert hook["secret"] == secret
    user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    [req] = receiver.wait(1)
    verify(secret, req)


def test_manual_retry_of_a_delivery(gw, receiver):
    hook = create(gw, receiver.url)
    user(gw).post(f"/v1/webhooks/{hook['id']}/test")
    [first] = receiver.wait(1)
    deadline = time.monotonic() + 5
    while not (d := user(gw).get(f"/v1/webhooks/{hook['id']}/deliveries").json()["data"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = user(gw).post(f"/v1/webhooks/{hook['id']}/deliveries/{d[0]['delivery_id']}/retry")
    assert r.status_code == 202, r.text
    _, again = receiver.wait(2)
    assert again["headers"]["webhook-id"] == first["headers"]["webhook-id"]
    r = user(gw).post(f"/v1/webhooks/{hook['id']}/deliveries/whd_nope/retry")
    assert r.status_code == 404


@pytest.mark.parametrize(
    "body, param",
    [
        ({"url": "ftp://example.com/x", "events": ["credits.low"]}, "url"),
        ({"url": "not a url", "events": ["credits.low"]}, "url"),
        ({"events": ["credits.low"]}, "url"),
        ({"url": "https://93.184.215.14/x", "events": ["usage.nope"]}, "events"),
        ({"url": "https://93.184.215.14/x", "events": []}, "events"),
        ({"url": "https://93.184.215.14/x", "events": ["credits.low"],
          "settings": {"usage_threshold_percent": 0}}, "settings.usage_threshold_percent"),
        ({"url": "https://93.184.215.14/x", "events": ["credits.low"],
          "settings": {"usage_threshold_percent": [50, 101]}}, "settings.usage_threshold_percent"),
        ({"url": "https://93.184.215.14/x", "events": ["credits.low"],
          "settings": {"credits_low_threshold": -1}}, "settings.credits_low_threshold"),
        ({"url": "https://93.184.215.14/x", "events": ["credits.low"], "secret": "hunter2"},
         "secret"),
    ],
)
def test_bad_bodies_get_400_naming_the_field_and_create_nothing(gateway, body, param):
    c = user(gateway)
    before = c.get("/v1/webhooks").json()["data"]
    r = c.post("/v1/webhooks", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert c.get("/v1/webhooks").json()["data"] == before


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
     "http://10.0.0.5/x", "http://localhost/x"],
)
def test_private_targets_are_refused_by_default(gateway, url):
    r = user(gateway).post("/v1/webhooks", json={"url": url, "events": ["credits.low"]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "url"
    assert "allow_private_targets" in err["message"]


def test_another_accounts_webhook_is_404_in_both_shapes(gw, receiver):
    hook = create(gw, receiver.url)
    other_account = gw.create_account("webhook-other")
    other = gw.create_key("other", account_id=other_account)["key"]
    bearer = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {other}"})
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"),
                         ("GET", "/deliveries"), ("POST", "/rotate-secret")]:
        r = bearer.request(method, f"/v1/webhooks/{hook['id']}{path}", json={})
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    anthropic = httpx.Client(
        base_url=gw.url, headers={"x-api-key": other, "anthropic-version": "2023-06-01"}
    )
    r = anthropic.get(f"/v1/webhooks/{hook['id']}")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    # Still there for its owner; deleted by its owner.
    assert user(gw).get(f"/v1/webhooks/{hook['id']}").status_code == 200
    assert user(gw).delete(f"/v1/webhooks/{hook['id']}").status_code == 200
    assert user(gw).get(f"/v1/webhooks/{hook['id']}").status_code == 404


def test_key_credit_and_depletion_events(gw, receiver):
    account = gw.create_account("webhook-events")
    admin = gw.admin
    r = admin.post(
        f"/v1/webhooks?account_id={account}",
        json={"url": receiver.url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
              "events": ["api_key.created", "api_key.revoked", "credits.granted",
                         "credits.depleted"]},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]

    def events(n):
        reqs = receiver.wait(n)
        return [verify(secret, q) for q in reqs]

    key = gw.create_key("evented", account_id=account)
    [created] = events(1)
    assert created["type"] == "api_key.created"
    assert created["data"]["key_id"] == key["id"]
    assert created["data"]["account_id"] == account
    assert key["key"] not in json.dumps(created), "the secret is never sent"

    # No credits: refused twice, depleted once.
    chat = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key['key']}"}, timeout=30)
    for _ in range(2):
        assert c.post("/v1/chat/completions", json=chat).status_code == 402
    [_, depleted] = events(2)
    assert depleted["type"] == "credits.depleted"
    assert depleted["data"]["credits_remaining"] == 0

    g = admin.post(f"/admin/accounts/{account}/credits", json={"amount_usd": "0.000001"})
    assert g.status_code == 201, g.text
    [*_, granted] = events(3)
    assert granted["type"] == "credits.granted"
    assert granted["data"]["amount_nanos"] == 1000
    assert granted["data"]["kind"] == "grant"

    # A new grant epoch: depleted again, once.
    assert c.post("/v1/chat/completions", json=chat).status_code == 402
    [*_, again] = events(4)
    assert again["type"] == "credits.depleted"

    gw.revoke_key(key["id"])
    [*_, revoked] = events(5)
    assert revoked["type"] == "api_key.revoked"
    assert revoked["data"]["key_id"] == key["id"]
    time.sleep(0.5)
    assert len(receiver.requests) == 5, [json.loads(q["body"])["type"] for q in receiver.requests]


def test_balance_thresholds_fire_once_each(gw, receiver):
    account = gw.create_account("webhook-thresholds", grant_usd="0.0002")  # 200,000 nano-USD
    r = gw.admin.post(
        f"/v1/webhooks?account_id={account}",
        json={"url": receiver.url,
              "events": ["usage.threshold", "credits.low", "credits.depleted"],
              "settings": {"usage_threshold_percent": [25, 50], "credits_low_threshold": 120}},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    key = gw.create_key("thresholds", account_id=account)["key"]
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    chat = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for _ in range(200):
        s = c.post("/v1/chat/completions", json=chat).status_code
        statuses.append(s)
        if s == 402:
            break
    assert statuses[-1] == 402 and statuses.count(200) > 10, statuses
    # A second refusal in the same epoch adds nothing.
    assert c.post("/v1/chat/completions", json=chat).status_code == 402
    time.sleep(1.5)
    got = [verify(secret, q) for q in receiver.requests]
    kinds = [(e["type"], e["data"].get("threshold_percent")) for e in got]
    assert sorted(kinds, key=str) == sorted(
        [("usage.threshold", 25), ("usage.threshold", 50), ("credits.low", None),
         ("credits.depleted", None)], key=str), kinds
    t50 = next(e for e in got if e["data"].get("threshold_percent") == 50)
    assert t50["data"]["percent_used"] >= 50
    assert t50["data"]["credits_used"] + t50["data"]["credits_remaining"] in range(195, 201)
    low = next(e for e in got if e["type"] == "credits.low")
    assert low["data"]["credits_remaining"] < 120
    assert low["data"]["credits_low_threshold"] == 120


def test_rate_limit_refusals_are_coalesced_per_key_and_minute(gw, receiver):
    account = gw.create_account("webhook-ratelimit", grant_usd="1")
    r = gw.admin.post(f"/v1/webhooks?account_id={account}",
                      json={"url": receiver.url, "events": ["rate_limit.exceeded"]})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    # Start early in a UTC minute, so the burst stays in one.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    k = gw.admin.post(f"/admin/accounts/{account}/keys",
                      json={"name": "limited", "limits": {"rpm_limit": 2}})
    assert k.status_code == 201, k.text
    key, key_id = k.json()["key"], k.json()["id"]
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    chat = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    statuses = [c.post("/v1/chat/completions", json=chat).status_code for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429], statuses
    # One event, at the minute's end, with the count.
    [req] = receiver.wait(1, timeout=70)
    e = verify(secret, req)
    assert e["type"] == "rate_limit.exceeded"
    assert e["data"]["key_id"] == key_id
    assert e["data"]["limit"] == "requests_per_minute"
    assert e["data"]["limit_value"] == 2
    assert e["data"]["refused_count"] == 3
    time.sleep(0.5)
    assert len(receiver.requests) == 1


def test_projected_exhaustion_fires_once_per_grant_epoch(gw, receiver):
    account = gw.create_account("webhook-projection", grant_usd="0.001")  # 1,000,000 nano-USD
    r = gw.admin.post(f"/v1/webhooks?account_id={account}",
                      json={"url": receiver.url, "events": ["credits.projected_exhaustion"]})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    key = gw.create_key("burner", account_id=account)["key"]
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    chat = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    # A few cents' worth of burn per hour would last days; this pace (measured over at least
    # a minute) empties the balance within hours: inside the default 24 h horizon.
    for _ in range(20):
        assert c.post("/v1/chat/completions", json=chat).status_code == 200
    [req] = receiver.wait(1)
    e = verify(secret, req)
    assert e["type"] == "credits.projected_exhaustion"
    d = e["data"]
    assert d["burn_rate_nanos_per_hour"] > 0
    assert d["window_hours"] == 6 and d["horizon_hours"] == 24
    assert d["projected_exhaustion_at"].endswith("Z")
    assert 0 < d["credits_remaining"] < 1000
    for _ in range(5):
        assert c.post("/v1/chat/completions", json=chat).status_code == 200
    time.sleep(1.0)
    assert len(receiver.requests) == 1, "once per grant epoch"


def test_key_spend_limit_thresholds_fire_once_per_period(gw, receiver):
    account = gw.create_account("webhook-key-spend", grant_usd="1")
    r = gw.admin.post(
        f"/v1/webhooks?account_id={account}",
        json={"url": receiver.url, "events": ["usage.threshold"],
              "settings": {"usage_threshold_percent": [50, 90]}},
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    k = gw.admin.post(f"/admin/accounts/{account}/keys",
                      json={"name": "capped", "limits": {"spend_limit_nanos": 600_000,
                                                         "spend_period": "daily"}})
    assert k.status_code == 201, k.text
    key, key_id = k.json()["key"], k.json()["id"]
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    chat = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    statuses = []
    for _ in range(600):
        statuses.append(c.post("/v1/chat/completions", json=chat).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and statuses.count(200) > 5, statuses
    time.sleep(1.5)
    got = [verify(secret, q) for q in receiver.requests]
    # Only the key's limit is near: $1 of account credits is far from 50 %.
    assert sorted(e["data"]["threshold_percent"] for e in got) == [50, 90], got
    for e in got:
        d = e["data"]
        assert e["type"] == "usage.threshold"
        assert d["key_id"] == key_id and d["period"] == "daily"
        assert d["percent_used"] >= d["threshold_percent"]
        assert d["spend_limit_credits"] == 600  # 600,000 nano-USD; a credit is a micro-USD
        day = time.strftime("%Y-%m-%dT00:00:00.000Z", time.gmtime())
        assert d["period_start"] == day, d
        # Each rounded down to whole credits, as everywhere in the LLMHub API.
        assert d["credits_used"] + d["credits_remaining"] in (599, 600), d
    # Further refusals and requests in the same period add nothing.
    c.post("/v1/chat/completions", json=chat)
    time.sleep(0.5)
    assert len(receiver.requests) == 2


@pytest.fixture(scope="module")
def gw_refire(start_gateway):
    return start_gateway(ALLOW_PRIVATE + "projection_refire_hours = 12\n")


def test_projected_exhaustion_fires_again_when_it_moves_earlier(gw_refire, receiver):
    gw = gw_refire
    chat = {"model": "gpt-4o-mini", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    # What one request costs, on an account of its own.
    probe = gw.create_account("projection-probe", grant_usd="1")
    pk = gw.create_key("probe", account_id=probe)["key"]
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=chat, timeout=30,
                      headers={"authorization": f"Bearer {pk}"}).status_code == 200
    left = gw.admin.get(f"/admin/accounts/{probe}/credits").json()["live_balance_nanos"]
    cost = 1_000_000_000 - left
    assert cost > 0
    # A balance that ten requests (burn measured over a minute) project to empty in 24 h:
    # n requests project B / (60 n c) hours; the first event at n ≈ 10, the projection falls
    # below 24 - 12 = 12 h at n ≈ 20 (fires again), and can never fall 12 h below that.
    grant_nanos = 10 * 60 * 24 * cost
    account = gw.create_account("webhook-refire")
    g = gw.admin.post(f"/admin/accounts/{account}/credits",
                      json={"amount_usd": f"{grant_nanos / 1e9:.9f}"})
    assert g.status_code == 201, g.text
    r = gw.admin.post(f"/v1/webhooks?account_id={account}",
                      json={"url": receiver.url, "events": ["credits.projected_exhaustion"]})
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    key = gw.create_key("burner", account_id=account)["key"]
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30)
    for _ in range(40):
        assert c.post("/v1/chat/completions", json=chat).status_code == 200
    first, second = [verify(secret, q) for q in receiver.wait(2)]
    time.sleep(1.0)
    assert len(receiver.requests) == 2, [verify(secret, q) for q in receiver.requests]
    assert first["type"] == second["type"] == "credits.projected_exhaustion"
    at = [time.mktime(time.strptime(e["data"]["projected_exhaustion_at"][:19], "%Y-%m-%dT%H:%M:%S"))
          for e in (first, second)]
    assert at[0] - at[1] > 12 * 3600, (first, second)
