"""`server.request_log` with `TOLLGATE_LOG_FORMAT=json`: one JSON log line per request, with the
record's ids, tokens and cost, and never the key, the prompt or the completion."""

from __future__ import annotations

import json
import time

import httpx


def test_one_json_line_per_request_without_secrets(start_gateway):
    gw = start_gateway(env={"TOLLGATE_LOG_FORMAT": "json"}, request_log=True)
    c = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}, timeout=30)
    prompt = "a secret prompt 7f3a9c"
    ids = []
    for _ in range(3):
        r = c.post("/v1/chat/completions", json={
            "model": "gpt-4o-mini", "max_tokens": 8,
            "messages": [{"role": "user", "content": prompt}]})
        assert r.status_code == 200
        ids.append(r.headers["x-request-id"])
    completion = r.json()["choices"][0]["message"]["content"]
    records = {rid: gw.record_for(rid, wait=5) for rid in ids}
    deadline = time.monotonic() + 5
    while True:
        text = (gw.workdir / "tollgate.err").read_text()
        lines = [json.loads(l) for l in text.splitlines() if l.startswith("{")]
        got = [l for l in lines if l.get("target") == "tollgate::request"]
        if len(got) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # Every stderr line is JSON.
    assert all(l.startswith("{") for l in text.splitlines() if l.strip()), text[-2000:]
    assert sorted(l["request_id"] for l in got) == sorted(ids)
    for line in got:
        rec = records[line["request_id"]]
        assert line["level"] == "INFO"
        assert line["account_id"] == gw.account_id and line["key_id"] == gw.key_id
        assert line["model"] == "gpt-4o-mini" and line["status"] == "success"
        assert line["input_tokens"] == rec["input_tokens"]
        assert line["output_tokens"] == rec["output_tokens"]
        assert line["cost_nanos"] == rec["cost_nanos"]
        assert line["latency_ms"] == rec["latency_ms"]
    assert gw.key not in text and prompt not in text
    assert completion and completion not in text


def test_request_lines_are_off_by_default(gateway):
    c = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {gateway.key}"},
                     timeout=30)
    r = c.post("/v1/chat/completions", json={
        "model": "gpt-4o-mini", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert gateway.record_for(r.headers["x-request-id"], wait=5)
    assert "tollgate::request" not in gateway.stderr_tail(100_000)
