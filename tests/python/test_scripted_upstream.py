"""Upstream behaviour the mock cannot produce, from a small scripted provider written here:
Anthropic prompt-cache writes (priced at their own rate), the cumulative `message_delta` usage
newer Anthropic API versions send, and a non-streamed response whose body stalls after the
headers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import pytest

from conftest import assert_charged, cost_nanos

CW_USAGE = {
    "input_tokens": 5,
    "cache_creation_input_tokens": 7,
    "cache_read_input_tokens": 3,
    "output_tokens": 11,
}
# Nano-USD per Mtok, as configured below (Claude Sonnet's rates).
CW_PRICES = (3_000_000_000, 15_000_000_000, 300_000_000, 3_750_000_000)
# 5 * 3e9 + 3 * 3e8 + 7 * 3.75e9 + 11 * 1.5e10 = 2.0715e11 -> 207,150 nano-USD
CW_COST = 207_150


def sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class Script(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stop = threading.Event()
    seen: list = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append((self.path, dict(self.headers), body))
        model = body["model"]
        if model == "gpt-script-stall":
            # Headers and the start of the body, then nothing.
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "500")
            self.end_headers()
            self.wfile.write(b'{"id":"chatcmpl-stall","object":"chat.completion",')
            self.wfile.flush()
            self.stop.wait(30)
            self.close_connection = True
            return
        if model.startswith("claude-script-cw"):
            return self.anthropic(body, full_delta=model.endswith("-full"))
        self.send_error(404)

    def anthropic(self, body, full_delta):
        msg = {
            "id": "msg_script",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "hello world"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": CW_USAGE,
        }
        if not body.get("stream"):
            raw = json.dumps(msg).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        start = {**msg, "content": [], "stop_reason": None,
                 "usage": {**CW_USAGE, "output_tokens": 1}}
        delta_usage = CW_USAGE if full_delta else {"output_tokens": 11}
        events = [
            sse("message_start", {"type": "message_start", "message": start}),
            sse("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}),
            sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "hello world"}}),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": delta_usage}),
            sse("message_stop", {"type": "message_stop"}),
        ]
        raw = b"".join(events)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def script():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Script)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    Script.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gw(start_gateway, script):
    price = 'input = "3"\noutput = "15"\ncached_input = "0.3"\ncache_write = "3.75"\n'
    extra = f"""
[providers.script]
kind = "openai"
base_url = "{script}/v1"
api_key = "sk-script"
models = ["gpt-script-*"]

[providers.scriptant]
kind = "anthropic"
base_url = "{script}/v1"
api_key = "sk-script-anthropic"
models = ["claude-script-*"]

[prices."claude-script-cw"]
{price}
[prices."claude-script-cw-full"]
{price}
[prices."gpt-script-stall"]
input = "1"
output = "1"
"""
    return start_gateway(extra_config=extra, stream_idle_timeout_secs=2)


@pytest.fixture
def client(gw):
    c = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0, timeout=10)
    yield c
    c.close()


def check_cache_write_record(gw, rid, streamed, model):
    rec = gw.record_for(rid)
    assert rec["status"] == "success" and rec["streamed"] is streamed
    assert rec["provenance"] == "provider"
    # All input: uncached 5 + cache reads 3 + cache writes 7.
    assert (rec["input_tokens"], rec["cached_tokens"], rec["cache_write_tokens"]) == (15, 3, 7)
    assert rec["output_tokens"] == 11
    assert (rec["price_input"], rec["price_output"], rec["price_cached_input"],
            rec["price_cache_write"]) == CW_PRICES
    assert rec["cost_nanos"] == cost_nanos(15, 11, 3, 7, CW_PRICES) == CW_COST
    assert rec["model_requested"] == model
    assert_charged(rec)


def test_cache_writes_are_priced_json(gw, client):
    msg = client.messages.create(
        model="claude-script-cw", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.usage.cache_creation_input_tokens == 7
    check_cache_write_record(gw, msg._request_id, False, "claude-script-cw")


@pytest.mark.parametrize("model", ["claude-script-cw", "claude-script-cw-full"],
                         ids=["delta-output-only", "delta-cumulative"])
def test_cache_writes_are_priced_stream(gw, client, model):
    with client.messages.stream(
        model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        rid = s.response.headers["request-id"]
        assert "".join(s.text_stream) == "hello world"
    check_cache_write_record(gw, rid, True, model)


def test_provider_credential_and_version_header(gw, client):
    client.messages.create(
        model="claude-script-cw", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    path, headers, body = Script.seen[-1]
    headers = {k.lower(): v for k, v in headers.items()}
    assert path == "/v1/messages"
    assert headers["x-api-key"] == "sk-script-anthropic"
    assert "authorization" not in headers
    assert headers["anthropic-version"]
    assert headers["x-tollgate-request-id"].startswith("req_")
    assert body["max_tokens"] == 20




def test_stalled_response_body_times_out(gw):
    rid = None
    try:
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "gpt-script-stall", "max_tokens": 5,
                  "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {gw.key}"},
            # upstream_timeout_secs = 3 and stream_idle_timeout_secs = 2 here: either bound
            # should have ended the exchange well within this.
            timeout=6,
        )
    except httpx.ReadTimeout:
        pytest.fail("the gateway never answered a request whose upstream body stalled")
    rid = r.headers["x-request-id"]
    assert r.status_code in (502, 504), r.text
    rec = gw.record_for(rid)
    assert rec is not None and rec["status"] == "error"
    assert rec["cost_nanos"] == 0
    view = httpx.get(gw.url + "/v1/credits", headers={"Authorization": f"Bearer {gw.key}"})
    assert view.json()["uncollected_micro"] == 0
