"""`GET /openapi.json` against real answers: every documented operation is called with valid
and invalid input on a gateway of its own, and each answer's status, content type and body must
be what the document says, errors in the caller's shape (OpenAI's for `Authorization: Bearer`,
Anthropic's for `x-api-key`). A route the document lacks, a status it does not list or a body
that does not match its schema fails; so does a documented operation no case here calls.
(crates/tollgate-http/src/compat/openapi.rs checks the document lists exactly the router's
routes.)"""

from __future__ import annotations

import time

import httpx
import pytest

from openapi_doc import GATEWAY_CONFIG, Document

# Webhook deliveries go to a closed loopback port: they fail fast and never leave the machine.
HOOK_URL = "http://127.0.0.1:9/hook"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}


class Caller:
    """Calls the gateway, checks every answer against the document, and notes what was hit."""

    def __init__(self, gw, doc: Document):
        self.gw = gw
        self.doc = doc
        self.hit: dict[tuple[str, str], set[int]] = {}
        # A fresh connection per request: the gateway closes the connection after an early
        # authentication error.
        self.http = httpx.Client(
            base_url=gw.url, timeout=30, follow_redirects=False,
            transport=httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
        )

    def headers(self, who: str | None) -> dict:
        return {
            None: {},
            "admin": {"authorization": f"Bearer {self.gw.admin_key}"},
            "user": {"authorization": f"Bearer {self.gw.key}"},
            "ant": {"x-api-key": self.gw.key, "anthropic-version": "2023-06-01"},
            "ant-admin": {"x-api-key": self.gw.admin_key},
            "bad": {"authorization": "Bearer tg-" + "x" * 43},
        }[who]

    def __call__(self, method: str, path: str, who: str | None, expect: int, *, headers=None,
                 **kw) -> httpx.Response:
        h = self.headers(who) | (headers or {})
        resp = self.http.request(method, path, headers=h, **kw)
        # Each case sends the cookies it means to: none are kept between requests.
        self.http.cookies.clear()
        key = self.doc.check(resp.request, resp)
        self.hit.setdefault(key, set()).add(resp.status_code)
        assert resp.status_code == expect, (
            f"{method} {path} as {who}: {resp.status_code}, expected {expect}: {resp.text[:300]}"
        )
        return resp


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(GATEWAY_CONFIG)


@pytest.fixture(scope="module")
def doc(gw) -> Document:
    r = httpx.get(gw.url + "/openapi.json", timeout=10)
    assert r.status_code == 200
    return Document(r.json())


@pytest.fixture(scope="module")
def call(gw, doc):
    c = Caller(gw, doc)
    yield c
    c.http.close()


def test_proxy_routes(call, gw):
    call("POST", "/v1/chat/completions", "user", 200, json=CHAT)
    r = call("POST", "/v1/chat/completions", "user", 200, json=CHAT | {"stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    call("POST", "/v1/chat/completions", None, 401, json=CHAT)
    call("POST", "/v1/chat/completions", "bad", 401, json=CHAT)
    call("POST", "/v1/chat/completions", "user", 400, json={"model": "gpt-4o-mini"})
    call("POST", "/v1/chat/completions", "ant", 400, json={"messages": []})
    call("POST", "/v1/chat/completions", "user", 400, content=b"{not json")
    call("POST", "/v1/chat/completions", "user", 404, json=CHAT | {"model": "nope-1"})
    call("POST", "/v1/chat/completions", "user", 502, json=CHAT | {"model": "gpt-dead-1"})
    call("POST", "/v1/embeddings", "user", 200,
         json={"model": "text-embedding-3-small", "input": "hi"})
    call("POST", "/v1/embeddings", "user", 400,
         json={"model": "text-embedding-3-small", "input": "hi", "stream": True})
    call("POST", "/v1/messages", "ant", 200, json=MESSAGES)
    call("POST", "/v1/messages", "ant", 200, json=MESSAGES | {"stream": True})
    call("POST", "/v1/messages", "user", 200, json=MESSAGES)
    call("POST", "/v1/messages", "ant", 400, json={"model": "claude-sonnet-4-20250514",
                                                    "messages": [{"role": "user", "content": "x"}]})
    call("POST", "/v1/messages", None, 401, json=MESSAGES)
    call("POST", "/v1/messages", "ant", 502, json=MESSAGES | {"model": "claude-dead-1"})
    count = {k: MESSAGES[k] for k in ("model", "messages")}
    call("POST", "/v1/messages/count_tokens", "ant", 200, json=count)
    call("POST", "/v1/messages/count_tokens", "ant", 400, json={"model": "claude-x"})
    call("POST", "/v1/messages/count_tokens", None, 401, json=count)
    call("POST", "/v1/responses", "user", 200, json={"model": "gpt-4o-mini", "input": "hi"})
    call("POST", "/v1/responses", "user", 200,
         json={"model": "gpt-4o-mini", "input": "hi", "stream": True})
    call("POST", "/v1/responses", "user", 400,
         json={"model": "gpt-4o-mini", "input": "hi", "background": True})
    openai_list = call("GET", "/v1/models", "user", 200).json()
    assert openai_list["object"] == "list"
    anthropic_list = call("GET", "/v1/models", "ant", 200).json()
    assert "has_more" in anthropic_list
    call("GET", "/v1/models", None, 401)


def test_admin_routes(call, gw):
    accounts = call("GET", "/admin/accounts", "admin", 200).json()
    assert any(a["id"] == gw.account_id for a in accounts["data"])
    call("GET", "/admin/accounts", "user", 403)
    call("GET", "/admin/accounts", "ant", 403)
    call("GET", "/admin/accounts", None, 401)
    acct = call("POST", "/admin/accounts", "admin", 201, json={"name": "openapi"}).json()["id"]
    call("POST", "/admin/accounts", "admin", 400, json={"nom": "x"})
    call("POST", "/admin/accounts", "ant-admin", 400, content=b"[")
    call("POST", "/admin/accounts", "user", 403, json={"name": "x"})
    call("GET", f"/admin/accounts/{acct}", "admin", 200)
    call("GET", "/admin/accounts/acct_missing", "admin", 404)
    call("PATCH", f"/admin/accounts/{acct}", "admin", 200, json={"disabled": False})
    call("PATCH", f"/admin/accounts/{acct}", "admin", 400, json={"disabled": "no"})
    call("PATCH", "/admin/accounts/acct_missing", "admin", 404, json={"disabled": True})
    key = call("POST", f"/admin/accounts/{acct}/keys", "admin", 201,
               json={"name": "k", "limits": {"rpm_limit": 100}}).json()
    call("POST", f"/admin/accounts/{acct}/keys", "admin", 201)
    call("POST", f"/admin/accounts/{acct}/keys", "admin", 400, json={"role": "boss"})
    call("POST", "/admin/accounts/acct_missing/keys", "admin", 404, json={})
    call("GET", f"/admin/accounts/{acct}/keys", "admin", 200)
    call("GET", "/admin/accounts/acct_missing/keys", "admin", 404)
    call("PATCH", f"/admin/keys/{key['id']}", "admin", 200,
         json={"limits": {"spend_limit_nanos": 10, "spend_period": "daily"}})
    call("PATCH", f"/admin/keys/{key['id']}", "admin", 400, json={"limits": {"rpm": 1}})
    call("PATCH", "/admin/keys/key_missing", "admin", 404, json={"limits": {}})
    call("DELETE", f"/admin/keys/{key['id']}", "admin", 200)
    call("DELETE", "/admin/keys/key_missing", "admin", 404)
    call("POST", f"/admin/accounts/{acct}/credits", "admin", 201,
         json={"amount_usd": "1.5", "idempotency_key": "openapi-1"})
    call("POST", f"/admin/accounts/{acct}/credits", "admin", 200,
         json={"amount_usd": "1.5", "idempotency_key": "openapi-1"})
    call("POST", f"/admin/accounts/{acct}/credits", "admin", 400,
         json={"amount_usd": "1", "amount_credits": 1})
    call("POST", "/admin/accounts/acct_missing/credits", "admin", 404, json={"amount_usd": "1"})
    call("GET", f"/admin/accounts/{acct}/credits", "admin", 200)
    call("GET", "/admin/accounts/acct_missing/credits", "admin", 404)
    call("PUT", f"/admin/accounts/{acct}/provider-keys/mock", "admin", 200,
         json={"api_key": "sk-own-1234"})
    call("PUT", f"/admin/accounts/{acct}/provider-keys/nope", "admin", 404,
         json={"api_key": "sk-own-1234"})
    call("PUT", f"/admin/accounts/{acct}/provider-keys/mock", "admin", 400, json={})
    call("GET", f"/admin/accounts/{acct}/provider-keys", "admin", 200)
    call("GET", "/admin/accounts/acct_missing/provider-keys", "admin", 404)
    call("DELETE", f"/admin/accounts/{acct}/provider-keys/mock", "admin", 204)
    call("DELETE", f"/admin/accounts/{acct}/provider-keys/mock", "admin", 404)
    rid = call("POST", "/v1/chat/completions", "user", 200, json=CHAT).headers["x-request-id"]
    call("GET", "/admin/requests", "admin", 200, params={"limit": 5})
    call("GET", "/admin/requests", "admin", 400, params={"limit": 0})
    call("GET", f"/admin/requests/{rid}", "admin", 200)
    call("GET", "/admin/requests/req_missing", "admin", 404)
    call("GET", "/admin/reprice", "admin", 200)
    call("GET", "/admin/reprice", "admin", 200, params={"from": "2020-01-01", "account_id": acct})
    call("GET", "/admin/reprice", "admin", 400, params={"from": "2030-01-02", "to": "2030-01-01"})
    call("GET", "/admin/reprice", "admin", 404, params={"account_id": "acct_missing"})
    call("GET", "/admin/reprice", "user", 403)
    prices = {"models": [{"model": "gpt-4o-mini", "owned_by": "openai", "display_name": "mini",
                          "input": "0.30", "output": "1.20", "max_output_tokens": 100}]}
    call("POST", "/admin/reprice", "admin", 200, json=prices)
    call("POST", "/admin/reprice", "admin", 400, json={"models": []})
    # Attribution on a usage read: a user and a tag are fine alone, not together.
    call("GET", "/v1/usage/models", "user", 200, params={"user": "customer-42"})
    call("GET", "/v1/usage/models", "user", 200, params={"tag": "feature=search"})
    call("GET", "/v1/usage/models", "user", 400, params={"user": "c", "tag": "feature=search"})
    call("POST", "/v1/chat/completions", "user", 400, json=CHAT,
         headers={"x-tollgate-tags": "not a tag"})


USAGE_GETS = [
    "/v1/usage", "/v1/usage/models", "/v1/user/models", "/v1/user/me", "/v1/user/logs",
    "/v1/model-usage", "/v1/credits",
]
ORG_GETS = [
    "/v1/organization/usage/completions", "/v1/organization/usage/embeddings",
    "/v1/organization/costs",
]


def test_usage_routes(call, gw):
    call("POST", "/v1/chat/completions", "user", 200, json=CHAT)
    for path in USAGE_GETS:
        call("GET", path, "user", 200)
        call("GET", path, "ant", 200)
        call("GET", path, "admin", 200, params={"account_id": gw.account_id})
        call("GET", path, "user", 400, params=[("key_id", "a"), ("key_id", "b")])
        call("GET", path, "user", 404, params={"key_id": "key_missing"})
        call("GET", path, None, 401)
    for fmt in ("csv", "json", "ndjson"):
        call("GET", "/v1/usage/export", "user", 200, params={"format": fmt})
    call("GET", "/v1/usage/export", "user", 400, params={"format": "xml"})
    call("GET", "/v1/usage/export", None, 401)
    call("GET", "/v1/usage/insights", "user", 200, params={"period": "today"})
    call("GET", "/v1/usage/insights", "ant", 200, params={"section": "model_mix"})
    call("GET", "/v1/usage/insights", "admin", 200, params={"account_id": gw.account_id})
    call("GET", "/v1/usage/insights", "user", 400, params={"section": "all"})
    call("GET", "/v1/usage/insights", "user", 404, params={"account_id": "acct_missing"})
    call("GET", "/v1/usage/insights", None, 401)
    usage = call("GET", "/v1/model-usage", "user", 200, params={"period": "today"}).json()
    config_ids = [m["modelConfigId"] for m in usage["usageByModel"].values()]
    assert config_ids, usage
    call("GET", f"/v1/model-usage/{config_ids[0]}", "user", 200)
    call("GET", "/v1/model-usage/cfg_missing", "user", 404)
    call("GET", f"/v1/model-usage/{config_ids[0]}", "user", 400, params={"limit": 0})
    start = int(time.time()) - 86400
    for path in ORG_GETS:
        call("GET", path, "admin", 200, params={"start_time": start})
        group = "line_item" if path.endswith("costs") else "model"
        call("GET", path, "admin", 200, params={"start_time": start, "group_by": group})
        call("GET", path, "admin", 400, params={})
        call("GET", path, "user", 403, params={"start_time": start})


def test_webhook_routes(call, gw):
    hook = call("POST", "/v1/webhooks", "user", 201,
                json={"url": HOOK_URL, "events": ["credits.low", "webhook.test"]}).json()
    assert hook["secret"]
    call("POST", "/v1/webhooks", "user", 400, json={"url": "not a url"})
    call("POST", "/v1/webhooks", "ant", 400, json={"url": HOOK_URL, "events": ["nope"]})
    call("POST", "/v1/webhooks", None, 401, json={"url": HOOK_URL})
    call("POST", "/v1/webhooks", "admin", 201,
         json={"url": HOOK_URL, "events": ["credits.low"], "account_id": gw.account_id})
    call("GET", "/v1/webhooks", "user", 200)
    call("GET", "/v1/webhooks", "admin", 200, params={"account_id": gw.account_id})
    call("GET", "/v1/webhooks", "user", 404, params={"account_id": "acct_missing"})
    wid = hook["id"]
    call("GET", f"/v1/webhooks/{wid}", "user", 200)
    call("GET", "/v1/webhooks/wh_missing", "user", 404)
    call("PATCH", f"/v1/webhooks/{wid}", "user", 200, json={"events": ["credits.low"]})
    call("PATCH", f"/v1/webhooks/{wid}", "user", 400, json={"url": 5})
    call("POST", f"/v1/webhooks/{wid}/rotate-secret", "user", 200)
    call("POST", "/v1/webhooks/wh_missing/rotate-secret", "user", 404)
    call("POST", f"/v1/webhooks/{wid}/test", "user", 202)
    call("POST", "/v1/webhooks/wh_missing/test", "user", 404)
    deliveries = []
    deadline = time.monotonic() + 10
    while not deliveries and time.monotonic() < deadline:
        deliveries = call("GET", f"/v1/webhooks/{wid}/deliveries", "user", 200).json()["data"]
        time.sleep(0.1)
    assert deliveries
    call("GET", f"/v1/webhooks/{wid}/deliveries", "user", 400, params={"limit": 0})
    call("GET", "/v1/webhooks/wh_missing/deliveries", "user", 404)
    call("POST", f"/v1/webhooks/{wid}/deliveries/{deliveries[0]['delivery_id']}/retry", "user", 202)
    call("POST", f"/v1/webhooks/{wid}/deliveries/dlv_missing/retry", "user", 404)
    call("DELETE", f"/v1/webhooks/{wid}", "user", 200)
    call("DELETE", f"/v1/webhooks/{wid}", "user", 404)


def test_dashboard_routes(call, gw):
    r = call("GET", "/", None, 303)
    assert r.headers["location"] == "/dashboard"
    call("GET", "/dashboard", None, 200)
    call("GET", "/dashboard/assets/app.js", None, 200)
    call("GET", "/dashboard/assets/app.css", None, 200)
    call("GET", "/dashboard/assets/nope.js", None, 404)
    signed = call("POST", "/dashboard/api/session", "user", 201)
    cookie = {"cookie": signed.headers["set-cookie"].split(";")[0]}
    csrf = signed.json()["csrf_token"]
    call("POST", "/dashboard/api/session", None, 401)
    call("POST", "/dashboard/api/session", None, 403, headers=cookie)
    # A session does not beget sessions: only a key in a header signs in.
    call("POST", "/dashboard/api/session", None, 400, headers=cookie | {"x-csrf-token": csrf})
    call("POST", "/dashboard/api/session", "bad", 401)
    assert call("GET", "/dashboard/api/session", None, 200, headers=cookie).json()["signed_in"]
    assert not call("GET", "/dashboard/api/session", None, 200).json()["signed_in"]
    for path, bad in [
        ("/dashboard/api/live", {"key_id": "key_missing"}),
        ("/dashboard/api/series", {"group": "colour"}),
        ("/dashboard/api/keys", {"key_id": "key_missing"}),
        ("/dashboard/api/requests", {"status": "bogus"}),
        ("/dashboard/api/credits", {"limit": 0}),
    ]:
        call("GET", path, "user", 200)
        call("GET", path, None, 200, headers=cookie)
        call("GET", path, "user", 404 if "key_id" in bad else 400, params=bad)
        call("GET", path, None, 401)
    call("GET", "/dashboard/api/series", "user", 200, params={"group": "key", "period": "current_month"})
    call("GET", "/dashboard/api/requests", "user", 200, params={"status": "success", "limit": 1})
    call("GET", "/dashboard/api/accounts", "admin", 200)
    call("GET", "/dashboard/api/accounts", "admin", 400, params={"timezone": "Nowhere/City"})
    call("GET", "/dashboard/api/accounts", "user", 403)
    call("DELETE", "/dashboard/api/session", None, 403, headers=cookie)
    call("DELETE", "/dashboard/api/session", None, 200, headers=cookie | {"x-csrf-token": csrf})
    call("DELETE", "/dashboard/api/session", None, 401, headers=cookie)


def test_ops_routes(call):
    call("GET", "/health", None, 200)
    call("GET", "/metrics", None, 200)
    call("GET", "/openapi.json", None, 200)


def test_every_documented_operation_was_called_and_answered_both_ways(call, doc):
    """Runs last (pytest keeps file order): every operation had a success, and every one that
    needs a key had an error answer too, each checked against the document above."""
    missing = doc.operations() - set(call.hit)
    assert not missing, f"documented but never called: {sorted(missing)}"
    for (method, path), statuses in sorted(call.hit.items()):
        assert any(s < 400 for s in statuses), f"{method} {path}: no success among {statuses}"
        op = doc.doc["paths"][path][method.lower()]
        security = op.get("security", [])
        if security and {} not in security:
            assert any(s >= 400 for s in statuses), f"{method} {path}: no error among {statuses}"


def test_an_undocumented_answer_fails_the_check(doc, gw):
    """The checker itself can fail: a status, a content type or a body the document does not
    have is refused."""
    req = httpx.Request("GET", gw.url + "/v1/usage", headers={"authorization": "Bearer x"})
    with pytest.raises(AssertionError, match="status not documented"):
        doc.check(req, httpx.Response(418, json={}, request=req))
    with pytest.raises(AssertionError, match="content type"):
        doc.check(req, httpx.Response(200, text="hi", request=req))
    with pytest.raises(AssertionError, match="does not match"):
        doc.check(req, httpx.Response(200, json={"period_start": 5}, request=req))
    with pytest.raises(AssertionError, match="OpenAIError"):
        doc.check(req, httpx.Response(401, json={"type": "error", "error": {
            "type": "authentication_error", "message": "no"}}, request=req))
    with pytest.raises(AssertionError, match="not in openapi.json"):
        doc.check(httpx.Request("GET", gw.url + "/v1/nothing"), httpx.Response(404))
