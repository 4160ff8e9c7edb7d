"""Stream timeouts, on a gateway with `stream_idle_timeout_secs = 1` and `drain_timeout_secs = 1`:
an upstream that goes quiet mid-stream, and a client that hangs up on a stream the upstream takes
longer than the drain budget to finish."""

import time

import httpx
import pytest

from conftest import assert_cost_consistent


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(stream_idle_timeout_secs=1, drain_timeout_secs=1)


def test_upstream_idle_mid_stream(gw, mock):
    # 3 events at once, then 1.5 s between events: the gateway gives up after 1 s of silence.
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a long story please"}],
        "mock": {"chunk_delay_ms": 1500, "output_tokens": 4},
    }
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", gw.url + "/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {gw.key}"}) as resp:
            assert resp.status_code == 200
            rid = resp.headers["x-request-id"]
            lines = []
            with pytest.raises(httpx.RemoteProtocolError):
                for line in resp.iter_lines():
                    lines.append(line)
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3.0, elapsed
    assert "data: [DONE]" not in lines
    rec = gw.record_for(rid, wait=3)
    assert rec["status"] == "error"
    assert rec["error_code"] == "upstream_timeout"
    assert rec["provenance"] == "estimated"
    assert rec["input_tokens"] == 12  # o200k: 3 + 6 words + 3
    assert rec["output_tokens"] == 0  # only the role chunk (empty content) arrived
    assert_cost_consistent(rec, "gpt-4o")


def test_drain_budget_exhausted(gw, mock):
    # 40 words at 100 ms each: ~4 s upstream, but only 1 s of draining after the client left.
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "tell me a long story please"}],
        "mock": {"chunk_delay_ms": 100, "output_tokens": 40},
    }
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", gw.url + "/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {gw.key}"}) as resp:
            rid = resp.headers["x-request-id"]
            for i, _ in enumerate(resp.iter_lines()):
                if i >= 3:
                    break
    rec = gw.record_for(rid, wait=4)
    assert rec is not None
    entry = mock.ledger_for(rid)
    assert entry["output_tokens"] == 40
    assert rec["status"] == "cancelled"
    assert rec["error_code"] == "client_disconnected"
    # Usage never arrived, so the output is the local count of what was generated during the
    # ~1 s of draining: fewer than 40 tokens, but not nothing.
    assert rec["provenance"] == "estimated"
    assert 3 <= rec["output_tokens"] < 30
    assert 1.0 <= (rec["finished_at_ms"] - rec["created_at_ms"]) / 1000 < 3.0
    assert_cost_consistent(rec, "gpt-4o")
