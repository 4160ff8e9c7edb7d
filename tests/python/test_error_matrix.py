"""Every error the gateway produces itself, with plain httpx, in both caller styles: `Bearer`
callers get OpenAI's error shape, `x-api-key` callers Anthropic's. Requests refused before
forwarding must leave no usage record and never reach the upstream."""

import json
import socket
import time

import httpx
import pytest

MAX_BODY = 2048

ENDPOINTS = {
    # name: (path, model, valid body)
    "chat": (
        "/v1/chat/completions",
        "gpt-4o",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}]},
    ),
    "messages": (
        "/v1/messages",
        "claude-sonnet-4-20250514",
        {
            "model": "claude-sonnet-4-20250514",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi there"}],
        },
    ),
    "responses": (
        "/v1/responses",
        "gpt-4o",
        {"model": "gpt-4o", "input": [{"role": "user", "content": "hi there"}]},
    ),
}
DEAD_MODEL = {"chat": "gpt-dead-1", "messages": "claude-dead-1", "responses": "gpt-dead-1"}
# The field each endpoint requires besides `model`.
REQUIRED = {"chat": "messages", "messages": "messages", "responses": "input"}

OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "provider_error",
    504: "timeout_error",
}
ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "api_error",
}


@pytest.fixture(scope="module")
def gw(start_gateway):
    """A gateway of its own with a small body limit (the rest as the session gateway)."""
    return start_gateway(max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def http():
    # No connection reuse: the gateway silently closes a keep-alive connection after some
    # errors (see test_keep_alive_after_early_error), which would make later requests flaky.
    with httpx.Client(timeout=15, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        yield c


def auth_headers(style, key):
    if key is None:
        return {}
    return {"Authorization": f"Bearer {key}"} if style == "bearer" else {"x-api-key": key}


def expected_shape(style, path, key_sent):
    """The documented rule: a non-empty x-api-key means Anthropic's shape; an unauthenticated
    call to /v1/messages is answered Anthropic-style too; everything else OpenAI-style."""
    if style == "x-api-key" and key_sent:
        return "anthropic"
    if path == "/v1/messages" and not key_sent:
        return "anthropic"
    return "openai"


def check_error(resp, shape, status, code, *, param=None, message_contains=None):
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    rid = resp.headers["x-request-id"]
    assert rid.startswith("req_")
    body = resp.json()
    if shape == "openai":
        assert set(body) == {"error"}, body
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
        assert err["code"] == code
        assert err["type"] == OPENAI_TYPE[status]
        assert err["param"] == param
        assert "request-id" not in resp.headers
    else:
        assert body["type"] == "error", body
        assert set(body) == {"type", "error"}
        err = body["error"]
        assert set(err) == {"type", "message"}, err
        assert err["type"] == ANTHROPIC_TYPE[status]
        assert resp.headers["request-id"] == rid
    assert isinstance(err["message"], str) and err["message"]
    if message_contains:
        assert message_contains in err["message"]
    return rid


class Snapshot:
    """Record and ledger counts, to prove that a request refused before authentication left no
    trace, and that one refused after it left exactly one `refused` record, charged nothing."""

    def __init__(self, gw, mock):
        self.gw, self.mock = gw, mock
        self.records = gw.record_count()
        self.ledger = len(mock.ledger())

    def assert_untouched(self, rid):
        assert self.gw.record_for(rid) is None
        assert self.gw.record_count() == self.records, "a refused request was recorded"
        assert len(self.mock.ledger()) == self.ledger, "a refused request reached the upstream"
        assert self.mock.ledger_for(rid) is None

    def assert_refused(self, rid, status):
        rec = self.gw.record_for(rid)
        assert rec is not None, "an authenticated refused request was not counted"
        assert rec["status"] == "refused" and rec["http_status"] == status, rec
        for field in ("input_tokens", "output_tokens", "cost_nanos", "charged_nanos"):
            assert rec[field] == 0, (field, rec)
        assert self.gw.record_count() == self.records + 1, "one record per refused request"
        assert len(self.mock.ledger()) == self.ledger, "a refused request reached the upstream"
        assert self.mock.ledger_for(rid) is None


STYLES = ["bearer", "x-api-key"]


@pytest.fixture(params=STYLES)
def style(request):
    return request.param


@pytest.fixture(params=list(ENDPOINTS))
def endpoint(request):
    return request.param


# ------------------------------------------------------------------------------------------
# Refused before forwarding


def test_missing_key(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body)
    shape = expected_shape(style, path, key_sent=False)
    rid = check_error(r, shape, 401, "missing_api_key")
    snap.assert_untouched(rid)


def test_bad_key(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body, headers=auth_headers(style, "tg-" + "x" * 43))
    rid = check_error(r, expected_shape(style, path, True), 401, "invalid_api_key",
                      message_contains="invalid API key")
    snap.assert_untouched(rid)


@pytest.mark.parametrize("used_before", [False, True], ids=["fresh", "cached"])
def test_revoked_key(gw, mock, http, style, endpoint, used_before):
    path, _, body = ENDPOINTS[endpoint]
    issued = gw.create_key(f"to-revoke-{style}-{endpoint}-{used_before}")
    headers = auth_headers(style, issued["key"])
    if used_before:
        # Puts the key in the gateway's validated-key cache; revoking must still take effect.
        ok = http.post(gw.url + path, json=body, headers=headers)
        assert ok.status_code == 200, ok.text
    revoked = gw.revoke_key(issued["id"])
    assert revoked["revoked_at_ms"] is not None
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body, headers=headers)
    rid = check_error(r, expected_shape(style, path, True), 401, "api_key_inactive")
    snap.assert_untouched(rid)


def test_invalid_json(gw, mock, http, style, endpoint):
    path, _, _ = ENDPOINTS[endpoint]
    snap = Snapshot(gw, mock)
    r = http.post(
        gw.url + path,
        content=b'{"model": "gpt-4o", "messages": [',
        headers={**auth_headers(style, gw.key), "content-type": "application/json"},
    )
    rid = check_error(r, expected_shape(style, path, True), 400, "invalid_json")
    snap.assert_refused(rid, 400)


def test_body_not_an_object(gw, mock, http, style, endpoint):
    path, _, _ = ENDPOINTS[endpoint]
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=[1, 2], headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 400, "invalid_json")
    snap.assert_refused(rid, 400)


def test_missing_model(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    body = {k: v for k, v in body.items() if k != "model"}
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body, headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 400, "invalid_request", param="model",
                      message_contains="model")
    snap.assert_refused(rid, 400)


@pytest.mark.parametrize("messages", [None, []], ids=["absent", "empty"])
def test_missing_messages(gw, mock, http, style, endpoint, messages):
    path, _, body = ENDPOINTS[endpoint]
    field = REQUIRED[endpoint]
    body = {k: v for k, v in body.items() if k != field}
    if messages is not None:
        body[field] = messages
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body, headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 400, "invalid_request",
                      param=field, message_contains=field)
    snap.assert_refused(rid, 400)


def test_messages_without_max_tokens(gw, mock, http, style):
    path, _, body = ENDPOINTS["messages"]
    body = {k: v for k, v in body.items() if k != "max_tokens"}
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body, headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 400, "invalid_request",
                      param="max_tokens")
    snap.assert_refused(rid, 400)


def test_embeddings_without_input(gw, mock, http, style):
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + "/v1/embeddings", json={"model": "text-embedding-3-small"},
                  headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, "/v1/embeddings", True), 400, "invalid_request",
                      param="input")
    snap.assert_refused(rid, 400)


def test_unknown_model(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    model = "claude-nope-7" if endpoint == "messages" else "gpt-nope-7"
    body = {**body, "model": model}
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json=body, headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 404, "model_not_found", param="model",
                      message_contains=model)
    snap.assert_refused(rid, 404)


def test_unrouted_model(gw, mock, http, style):
    """Priced, but no configured provider serves it."""
    path, _, body = ENDPOINTS["chat"]
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json={**body, "model": "gemini-2.5-pro"},
                  headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 404, "model_not_found", param="model")
    snap.assert_refused(rid, 404)


def padded(body: dict, size: int) -> bytes:
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))  # trailing whitespace keeps it valid JSON


def test_body_over_limit(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    snap = Snapshot(gw, mock)
    r = http.post(
        gw.url + path,
        content=padded(body, MAX_BODY + 1),
        headers={**auth_headers(style, gw.key), "content-type": "application/json"},
    )
    rid = check_error(r, expected_shape(style, path, True), 413, "request_too_large",
                      message_contains=str(MAX_BODY))
    snap.assert_refused(rid, 413)


def test_chunked_body_over_limit(gw, mock, http, style, endpoint):
    """No content-length: the gateway must cut the body off as it passes the limit."""
    path, _, body = ENDPOINTS[endpoint]
    data = padded(body, MAX_BODY * 2)

    def chunks():
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    snap = Snapshot(gw, mock)
    r = http.post(
        gw.url + path,
        content=chunks(),
        headers={**auth_headers(style, gw.key), "content-type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    rid = check_error(r, expected_shape(style, path, True), 413, "request_too_large")
    snap.assert_refused(rid, 413)


def test_body_exactly_at_limit_is_accepted(gw, mock, http, style, endpoint):
    path, model, body = ENDPOINTS[endpoint]
    r = http.post(
        gw.url + path,
        content=padded(body, MAX_BODY),
        headers={**auth_headers(style, gw.key), "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    rid = r.headers["x-request-id"]
    entry = mock.ledger_for(rid)
    rec = gw.record_for(rid)
    assert entry["input_tokens"] == 3 == rec["input_tokens"]
    assert rec["status"] == "success" and rec["model_requested"] == model


# ------------------------------------------------------------------------------------------
# Forwarded, and failed upstream: recorded as errors


def test_upstream_unreachable(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    model = DEAD_MODEL[endpoint]
    ledger_before = len(mock.ledger())
    r = http.post(gw.url + path, json={**body, "model": model},
                  headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 502, "provider_error",
                      message_contains="unreachable")
    assert len(mock.ledger()) == ledger_before
    rec = gw.record_for(rid)
    assert rec is not None, "an upstream failure must still be recorded"
    assert rec["status"] == "error" and rec["http_status"] == 502
    assert rec["error_code"] == "provider_error"
    assert rec["provider"] == ("deadant" if endpoint == "messages" else "dead")
    assert (rec["input_tokens"], rec["output_tokens"], rec["cost_nanos"]) == (0, 0, 0)


@pytest.mark.parametrize("style,endpoint", [("bearer", "chat"), ("x-api-key", "messages")])
def test_upstream_timeout(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    r = http.post(gw.url + path, json={**body, "mock": {"hang": True}},
                  headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 504, "upstream_timeout",
                      message_contains="3s")
    entry = mock.ledger_for(rid)
    assert entry is not None and entry["status"] == 0  # the mock got it and never answered
    rec = gw.record_for(rid)
    assert rec["status"] == "error" and rec["http_status"] == 504
    assert rec["error_code"] == "upstream_timeout"
    assert 2900 <= rec["latency_ms"] < 6000
    assert (rec["input_tokens"], rec["output_tokens"], rec["cost_nanos"]) == (0, 0, 0)


@pytest.mark.parametrize("status", [400, 429, 500])
def test_upstream_error_passthrough(gw, mock, http, style, endpoint, status):
    path, _, body = ENDPOINTS[endpoint]
    r = http.post(gw.url + path, json={**body, "mock": {"error_status": status}},
                  headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), status, "upstream_error")
    assert r.json()["error"]["message"] == "mock upstream error"
    assert mock.ledger_for(rid)["status"] == status
    rec = gw.record_for(rid)
    assert rec["status"] == "error" and rec["http_status"] == status
    assert rec["error_code"] == "upstream_error"


# ------------------------------------------------------------------------------------------
# Misc gateway-generated errors


def test_unknown_endpoint(gw, http, style):
    r = http.get(gw.url + "/v1/nope", headers=auth_headers(style, gw.key))
    check_error(r, expected_shape(style, "/v1/nope", True), 404, "not_found")


def test_admin_api_refuses_user_keys(gw, http):
    r = http.get(gw.url + "/admin/requests", headers=auth_headers("bearer", gw.key))
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "permission_denied"


def test_embeddings_cannot_stream(gw, mock, http, style):
    snap = Snapshot(gw, mock)
    r = http.post(
        gw.url + "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": "a b", "stream": True},
        headers=auth_headers(style, gw.key),
    )
    rid = check_error(r, expected_shape(style, "/v1/embeddings", True), 400,
                      "unsupported_parameter", param="stream")
    snap.assert_refused(rid, 400)


def test_stream_must_be_boolean(gw, mock, http, style, endpoint):
    path, _, body = ENDPOINTS[endpoint]
    snap = Snapshot(gw, mock)
    r = http.post(gw.url + path, json={**body, "stream": "yes"},
                  headers=auth_headers(style, gw.key))
    rid = check_error(r, expected_shape(style, path, True), 400, "invalid_request", param="stream")
    snap.assert_refused(rid, 400)


def test_wrong_method(gw, http, style, endpoint):
    path, _, _ = ENDPOINTS[endpoint]
    r = http.get(gw.url + path, headers=auth_headers(style, gw.key))
    assert r.status_code == 405
    body = r.json()
    if expected_shape(style, path, True) == "openai":
        assert body["error"]["code"] == "method_not_allowed"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------------------
# HTTP/1.1 keep-alive after an error sent before the request body was read


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response with a content-length body. Returns (status, headers, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        buf += chunk
    return status, headers, buf[length:]




@pytest.mark.parametrize("case", ["missing-key", "bad-key", "too-large"])
def test_keep_alive_after_early_error(gw, case):
    body = json.dumps(ENDPOINTS["chat"][2]).encode()
    auth = f"Authorization: Bearer {gw.key}\r\n"
    want = 401
    if case == "missing-key":
        auth = ""
    elif case == "bad-key":
        auth = "Authorization: Bearer tg-not-a-key\r\n"
    else:
        body = padded(ENDPOINTS["chat"][2], MAX_BODY + 100)
        want = 413
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{auth}\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        # The headers first; the body only once the gateway has answered (it answers these
        # errors without waiting for the body), so the body is never already buffered.
        sock.sendall(head)
        sock.settimeout(1.0)
        try:
            status, headers, rest = read_response(sock)
            answered_early = True
        except TimeoutError:
            answered_early = False  # a gateway that reads the body first: fine too
        sock.settimeout(5)
        time.sleep(0.2)
        try:
            sock.sendall(body)
            if not answered_early:
                status, headers, rest = read_response(sock)
            assert status == want
            if headers.get("connection", "").lower() == "close":
                return  # announced: a client will not reuse the connection
            # Not announced, so the connection must still serve the next request.
            time.sleep(0.1)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
            status, _, _ = read_response(sock, rest)
        except (ConnectionError, OSError) as e:
            pytest.fail(f"keep-alive connection closed unannounced after a {want}: {e!r}")
        assert status == 200
