"""Streams that do not end normally: a client that hangs up mid-stream (the gateway must drain the
upstream and record the real usage as `cancelled`), and an upstream that cuts the stream (the
client must see a broken stream, and the record is an `error` with estimated tokens)."""

import json
import time

import httpx
import openai
import pytest

from conftest import assert_cost_consistent, assert_record_matches_ledger

CHAT_BODY = {
    "model": "gpt-4o",
    "stream": True,
    "messages": [{"role": "user", "content": "tell me a long story please"}],  # 6 words + 1
}
MESSAGES_BODY = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "tell me a long story please"}],
}


def read_events(resp, n):
    """Reads `n` SSE events (blank-line separated) off a streaming httpx response."""
    events, current = [], []
    for line in resp.iter_lines():
        if line == "":
            if current:
                events.append("\n".join(current))
                current = []
                if len(events) == n:
                    return events
        else:
            current.append(line)
    return events


def wait_for_record(gw, rid, timeout=8.0):
    rec = gw.record_for(rid, wait=timeout)
    assert rec is not None, f"no record for {rid} after {timeout}s\n{gw.stderr_tail()}"
    return rec


@pytest.mark.parametrize(
    "path,body,headers_of,model",
    [
        ("/v1/chat/completions", CHAT_BODY, lambda k: {"Authorization": f"Bearer {k}"}, "gpt-4o"),
        ("/v1/messages", MESSAGES_BODY, lambda k: {"x-api-key": k}, "claude-sonnet-4-20250514"),
    ],
    ids=["chat", "messages"],
)
def test_client_disconnect_mid_stream_is_drained(gateway, mock, path, body, headers_of, model):
    body = {**body, "mock": {"chunk_delay_ms": 50, "output_tokens": 40}}
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", gateway.url + path, json=body,
                           headers=headers_of(gateway.key)) as resp:
            assert resp.status_code == 200
            rid = resp.headers["x-request-id"]
            events = read_events(resp, 2)
            assert len(events) == 2
        # Leaving the block closes the half-read response, hence the connection.
    hung_up_after = time.monotonic() - started
    assert hung_up_after < 1.5, "the stream should still have been running when we hung up"
    # The rest of the stream takes ~2 s upstream; the record comes once it has been drained.
    rec = wait_for_record(gateway, rid)
    entry = mock.ledger_for(rid)
    assert entry["completed"] is True, "the gateway did not read the upstream to its end"
    assert entry["usage_reported"] is True
    assert entry["output_tokens"] == 40
    assert rec["status"] == "cancelled"
    assert rec["error_code"] == "client_disconnected"
    assert rec["streamed"] is True
    # Metered only once the upstream had finished: 40 words at 50 ms each.
    assert rec["latency_ms"] >= 1800
    assert_record_matches_ledger(rec, entry, model)
    assert rec["input_tokens"] == 7


def test_openai_sdk_cut_stream_raises_and_is_estimated(oai, gateway, mock):
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=CHAT_BODY["messages"],
        stream=True,
        extra_body={"mock": {"cut_at_chunk": 3}},
    )
    rid = stream.response.headers["x-request-id"]
    got = []
    # Not a clean end: the SDK reports the broken connection...
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            got.append(chunk)
    # ...after no more than the chunks sent before the cut (role, "lorem ", "ipsum ").
    assert len(got) <= 3
    assert all(c.choices[0].finish_reason is None for c in got)
    check_cut_record(gateway, mock, rid, "gpt-4o")


def test_httpx_cut_stream_is_incomplete_chat(gateway, mock):
    body = {**CHAT_BODY, "mock": {"cut_at_chunk": 3}}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", gateway.url + "/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {gateway.key}"}) as resp:
            assert resp.status_code == 200
            rid = resp.headers["x-request-id"]
            lines = []
            with pytest.raises(httpx.RemoteProtocolError):
                for line in resp.iter_lines():
                    lines.append(line)
    data = [ln[len("data: "):] for ln in lines if ln.startswith("data: ")]
    assert "[DONE]" not in data
    assert len(data) <= 3
    for d in data:
        json.loads(d)
    check_cut_record(gateway, mock, rid, "gpt-4o")


def check_cut_record(gateway, mock, rid, model):
    entry = mock.ledger_for(rid)
    assert entry["completed"] is False and entry["usage_reported"] is False
    rec = wait_for_record(gateway, rid, timeout=3)
    assert rec["status"] == "error"
    assert rec["error_code"] == "upstream_stream_broken"
    assert rec["provenance"] == "estimated"
    # Estimated locally with the bundled o200k tokenizer: 3 per message + 6 words + 3 priming
    # of input, and the output text the client actually got before the cut ("lorem ipsum ",
    # 4 o200k tokens), not the 16 words the mock had planned.
    assert rec["input_tokens"] == 12
    assert rec["output_tokens"] == 4
    assert_cost_consistent(rec, model)




def test_anthropic_cut_stream_is_error_and_estimated(gateway, mock):
    # message_start, content_block_start, ping, 2 text deltas, then the connection is cut.
    body = {**MESSAGES_BODY, "mock": {"cut_at_chunk": 5}}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", gateway.url + "/v1/messages", json=body,
                           headers={"x-api-key": gateway.key}) as resp:
            assert resp.status_code == 200
            rid = resp.headers["request-id"]
            lines = []
            with pytest.raises(httpx.RemoteProtocolError):
                for line in resp.iter_lines():
                    lines.append(line)
    events = [ln[len("event: "):] for ln in lines if ln.startswith("event: ")]
    assert events == ["message_start", "content_block_start", "ping",
                      "content_block_delta", "content_block_delta"]
    entry = mock.ledger_for(rid)
    assert entry["completed"] is False and entry["usage_reported"] is False
    rec = wait_for_record(gateway, rid, timeout=3)
    assert rec["status"] == "error"
    assert rec["error_code"] == "upstream_stream_broken"
    # The output was never reported (message_start's output_tokens is a placeholder), so it
    # must be counted locally: "lorem ipsum " reached the client, 4 o200k tokens, as in the
    # OpenAI case above.
    assert rec["provenance"] == "estimated"
    assert rec["output_tokens"] == 4
    # Input: message_start's reported 7, or the local estimate (3 + 6 + 3); either is honest.
    assert rec["input_tokens"] in (7, 12)
    assert_cost_consistent(rec, "claude-sonnet-4-20250514")
