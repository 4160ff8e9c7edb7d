"""OpenAI's Responses API through the gateway with the official openai SDK
(`client.responses.create`, JSON and `stream=True`), and Anthropic's token counter
(`client.messages.count_tokens`): each metered request's record equals what the mock says it
served (same request id), priced by the documented formula; count_tokens is authenticated and
rate-limited, but neither billed nor recorded."""

import time

import anthropic
import httpx
import openai
import pytest

from conftest import (
    PRICES,
    assert_cost_consistent,
    assert_record_matches_ledger,
    cost_nanos,
)

MODEL = "gpt-4o"
INSTRUCTIONS = "be brief"  # 2 words, no +1
# One user message of 4 words (+1), in each form `input` may take.
INPUTS = {
    "string": "hello there big world",
    "items": [{"role": "user", "content": "hello there big world"}],
    "parts": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hello there"},
                {"type": "input_text", "text": "big world"},
            ],
        }
    ],
}
INPUT_TOKENS = 2 + 4 + 1
LOREM16 = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et"
)
STREAM_EVENTS = (
    ["response.created", "response.in_progress", "response.output_item.added",
     "response.content_part.added"]
    + ["response.output_text.delta"] * 16
    + ["response.output_text.done", "response.content_part.done", "response.output_item.done",
       "response.completed"]
)


def assert_responses_record(rec, gateway, *, streamed, status="success"):
    assert rec["account_id"] == gateway.account_id and rec["key_id"] == gateway.key_id
    assert rec["endpoint"] == "responses"
    assert rec["model_requested"] == MODEL and rec["model_served"] == MODEL
    assert rec["provider"] == "mock" and rec["owned_by"] == "openai"
    assert rec["streamed"] is streamed
    assert rec["status"] == status


def count_for(gateway, rid):
    return sum(1 for r in gateway.records() if r["request_id"] == rid)


@pytest.mark.parametrize("form", list(INPUTS))
def test_responses_json_matches_the_ledger(oai, gateway, mock, form):
    raw = oai.responses.with_raw_response.create(
        model=MODEL, instructions=INSTRUCTIONS, input=INPUTS[form]
    )
    rid = raw.headers["x-request-id"]
    assert rid.startswith("req_")
    resp = raw.parse()
    assert resp.object == "response" and resp.status == "completed"
    assert resp.output_text == LOREM16
    assert resp.usage.input_tokens == INPUT_TOKENS and resp.usage.output_tokens == 16

    entry = mock.ledger_for(rid)
    assert entry["api"] == "responses" and entry["streamed"] is False
    assert entry["input_tokens"] == INPUT_TOKENS and entry["output_tokens"] == 16
    assert entry["usage_reported"] is True and entry["completed"] is True
    # Only the provider's credential went upstream.
    assert entry["auth"] == "Bearer sk-upstream-openai"
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert_responses_record(rec, gateway, streamed=False)
    assert rec["http_status"] == 200 and rec["error_code"] is None
    # 7 * 2.5e9 + 16 * 1e10 = 1.775e11 per M tokens -> 177,500 nano-USD.
    assert rec["cost_nanos"] == 177_500
    assert count_for(gateway, rid) == 1


def test_responses_stream_matches_the_ledger(oai, gateway, mock):
    stream = oai.responses.create(
        model=MODEL, instructions=INSTRUCTIONS, input=INPUTS["items"], stream=True
    )
    rid = stream.response.headers["x-request-id"]
    events = list(stream)
    assert [e.type for e in events] == STREAM_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(STREAM_EVENTS)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == LOREM16
    done = events[-1].response
    assert done.status == "completed" and done.output_text == LOREM16

    entry = mock.ledger_for(rid)
    assert entry["api"] == "responses" and entry["streamed"] is True
    assert entry["completed"] is True and entry["usage_reported"] is True
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert_responses_record(rec, gateway, streamed=True)
    # The usage the client saw in response.completed is what was recorded.
    assert done.usage.input_tokens == rec["input_tokens"] == INPUT_TOKENS
    assert done.usage.output_tokens == rec["output_tokens"] == 16
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] >= 0
    assert rec["cost_nanos"] == 177_500
    assert count_for(gateway, rid) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_cached_and_reasoning_tokens(oai, gateway, mock, stream):
    kwargs = dict(
        model=MODEL,
        input=INPUTS["string"],
        instructions=INSTRUCTIONS,
        extra_body={"mock": {"cached_tokens": 3, "reasoning_tokens": 2, "output_tokens": 9}},
    )
    if stream:
        s = oai.responses.create(stream=True, **kwargs)
        rid = s.response.headers["x-request-id"]
        usage = [e for e in s][-1].response.usage
    else:
        raw = oai.responses.with_raw_response.create(**kwargs)
        rid = raw.headers["x-request-id"]
        usage = raw.parse().usage
    assert usage.input_tokens == INPUT_TOKENS
    assert usage.input_tokens_details.cached_tokens == 3
    assert usage.output_tokens == 11
    assert usage.output_tokens_details.reasoning_tokens == 2

    entry = mock.ledger_for(rid)
    assert (entry["cached_tokens"], entry["reasoning_tokens"]) == (3, 2)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert (rec["input_tokens"], rec["cached_tokens"]) == (7, 3)  # total, cached included
    assert (rec["output_tokens"], rec["reasoning_tokens"]) == (11, 2)  # reasoning included
    assert rec["cost_nanos"] == cost_nanos(7, 11, 3, 0, PRICES[MODEL]) == 123_750


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_missing_usage_is_estimated(oai, gateway, mock, stream):
    kwargs = dict(
        model=MODEL,
        instructions=INSTRUCTIONS,
        input=INPUTS["items"],
        extra_body={"mock": {"omit_usage": True}},
    )
    if stream:
        s = oai.responses.create(stream=True, **kwargs)
        rid = s.response.headers["x-request-id"]
        events = list(s)
        assert events[-1].type == "response.completed"
        assert events[-1].response.usage is None
    else:
        raw = oai.responses.with_raw_response.create(**kwargs)
        rid = raw.headers["x-request-id"]
        resp = raw.parse()
        assert resp.usage is None and resp.output_text == LOREM16

    entry = mock.ledger_for(rid)
    assert entry["usage_reported"] is False and entry["completed"] is True
    rec = gateway.record_for(rid)
    assert rec["status"] == "success"
    assert rec["provenance"] == "estimated"
    # Counted locally with the bundled o200k BPE: "be brief" (2) + one input item framed as a
    # chat message (3 + 4 words) + 3 of reply priming = 12; the 16 lorem-ipsum words are 17.
    assert rec["input_tokens"] == 12
    assert rec["output_tokens"] == 17
    assert rec["cached_tokens"] == 0 and rec["reasoning_tokens"] == 0
    assert rec["cost_nanos"] == 200_000  # 12 * 2.5e9 + 17 * 1e10 = 2.0e11
    assert_cost_consistent(rec, MODEL)


def test_client_disconnect_mid_stream_is_recorded_once(gateway, mock):
    body = {
        "model": MODEL,
        "input": "tell me a long story please",  # 6 words + 1
        "stream": True,
        "mock": {"chunk_delay_ms": 50, "output_tokens": 40},
    }
    started = time.monotonic()
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", gateway.v1 + "/responses", json=body,
                           headers={"Authorization": f"Bearer {gateway.key}"}) as resp:
            assert resp.status_code == 200
            rid = resp.headers["x-request-id"]
            seen = 0
            for line in resp.iter_lines():
                seen += line.startswith("event: ")
                if seen == 5:  # created .. the first delta
                    break
    assert time.monotonic() - started < 1.5, "the stream should still have been running"
    rec = gateway.record_for(rid, wait=8)
    assert rec is not None, gateway.stderr_tail()
    entry = mock.ledger_for(rid)
    assert entry["completed"] is True, "the gateway did not read the upstream to its end"
    assert entry["usage_reported"] is True and entry["output_tokens"] == 40
    assert rec["status"] == "cancelled" and rec["error_code"] == "client_disconnected"
    assert rec["latency_ms"] >= 1800  # metered once the upstream had finished
    assert_record_matches_ledger(rec, entry, MODEL)
    assert rec["input_tokens"] == 7
    time.sleep(0.3)
    assert count_for(gateway, rid) == 1


def test_cut_stream_is_an_error_with_estimated_tokens(oai, gateway, mock):
    # created, in_progress, output_item.added, content_part.added, 2 deltas, then the cut.
    stream = oai.responses.create(
        model=MODEL, input=INPUTS["items"], stream=True,
        extra_body={"mock": {"cut_at_chunk": 6}},
    )
    rid = stream.response.headers["x-request-id"]
    got = []
    with pytest.raises(openai.APIConnectionError):
        for e in stream:
            got.append(e.type)
    assert got[-1] == "response.output_text.delta" and len(got) <= 6
    entry = mock.ledger_for(rid)
    assert entry["completed"] is False and entry["usage_reported"] is False
    rec = gateway.record_for(rid, wait=3)
    assert rec["status"] == "error" and rec["error_code"] == "upstream_stream_broken"
    assert rec["provenance"] == "estimated"
    # The output the client got ("lorem ipsum ", 4 o200k tokens), and the input counted
    # locally (3 + 4 + 3).
    assert (rec["input_tokens"], rec["output_tokens"]) == (10, 4)
    assert_cost_consistent(rec, MODEL)


def test_output_is_capped_to_what_the_balance_covers(gateway, mock):
    """A balance that cannot cover the model's maximum output: the request goes upstream with
    `max_output_tokens` lowered to what it covers, and says so."""
    account = gateway.create_account("responses-cap", grant_usd="0.001")  # 1,000,000 nano-USD
    key = gateway.create_key("responses-cap", account_id=account)["key"]
    r = httpx.post(
        gateway.v1 + "/responses",
        json={"model": MODEL, "input": "hi", "mock": {"output_tokens": 500}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
    )
    assert r.status_code == 200, r.text
    cap = int(r.headers["x-tollgate-max-tokens"])
    assert 0 < cap < 500
    rid = r.headers["x-request-id"]
    entry = mock.ledger_for(rid)
    # The mock stops at the max_output_tokens it was sent.
    assert entry["output_tokens"] == cap and r.json()["status"] == "incomplete"
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert rec.get("anomaly") is None
    assert rec["charged_nanos"] <= 1_000_000


@pytest.mark.parametrize("usd", ["0.000145", "0.000245"], ids=["10-tokens", "20-tokens"])
def test_a_cap_is_never_below_the_apis_minimum_of_16(gateway, mock, usd):
    """The hold of `{"input": "hi"}` counts its input as 18 tokens at 2,500 nano-USD (the dearest
    input class), and output costs 10,000 a token: these balances cover about 10 and 20 output
    tokens. OpenAI refuses a `max_output_tokens` below 16, so the first is a 402 (where chat
    would be capped to 10), the second goes up capped to 20."""
    account = gateway.create_account(f"responses-floor-{usd}", grant_usd=usd)
    key = gateway.create_key("responses-floor", account_id=account)["key"]
    before = len(mock.ledger())
    r = httpx.post(gateway.v1 + "/responses",
                   json={"model": MODEL, "input": "hi", "mock": {"output_tokens": 500}},
                   headers={"Authorization": f"Bearer {key}"}, timeout=15)
    if usd == "0.000145":
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "insufficient_balance"
        assert len(mock.ledger()) == before
        chat = httpx.post(gateway.v1 + "/chat/completions",
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                          headers={"Authorization": f"Bearer {key}"}, timeout=15)
        assert chat.status_code == 200, chat.text
        assert int(chat.headers["x-tollgate-max-tokens"]) < 16
    else:
        assert r.status_code == 200, r.text
        cap = int(r.headers["x-tollgate-max-tokens"])
        assert 16 <= cap <= 20
        assert mock.ledger_for(r.headers["x-request-id"])["output_tokens"] == cap


def test_unfunded_account_gets_402_in_the_openai_shape(gateway, mock):
    account = gateway.create_account("responses-broke")
    key = gateway.create_key("responses-broke", account_id=account)["key"]
    client = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
    before = len(mock.ledger())
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model=MODEL, input="hi")
    err = info.value
    assert err.status_code == 402
    assert err.response.json()["error"]["code"] == "insufficient_balance"
    assert err.response.json()["error"]["type"] == "billing_error"
    assert len(mock.ledger()) == before, "a refused request reached the upstream"
    rec = gateway.record_for(err.response.headers["x-request-id"])
    assert rec["status"] == "refused" and rec["endpoint"] == "responses"
    assert rec["cost_nanos"] == 0


def test_an_anthropic_model_is_refused_with_400(oai, gateway, mock):
    before = len(mock.ledger())
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model="claude-sonnet-4-20250514", input="hi")
    body = info.value.response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "invalid_request" and body["error"]["param"] == "model"
    assert "/v1/messages" in body["error"]["message"]
    assert len(mock.ledger()) == before
    rec = gateway.record_for(info.value.response.headers["x-request-id"])
    assert rec["status"] == "refused" and rec["http_status"] == 400


def test_background_responses_are_refused(oai, gateway, mock):
    before = len(mock.ledger())
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=MODEL, input="hi", background=True)
    err = info.value.response.json()["error"]
    assert (err["code"], err["param"]) == ("unsupported_parameter", "background")
    assert len(mock.ledger()) == before


@pytest.mark.parametrize("key", [None, "tg-" + "x" * 43], ids=["missing", "bad"])
def test_responses_auth_failures_in_the_openai_shape(gateway, mock, key):
    before = (gateway.record_count(), len(mock.ledger()))
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    r = httpx.post(gateway.v1 + "/responses", json={"model": MODEL, "input": "hi"},
                   headers=headers)
    assert r.status_code == 401
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "authentication_error"
    assert err["code"] == ("missing_api_key" if key is None else "invalid_api_key")
    assert (gateway.record_count(), len(mock.ledger())) == before
    if key is not None:
        client = openai.OpenAI(base_url=gateway.v1, api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.responses.create(model=MODEL, input="hi")


# --------------------------------------------------------------------------------------------
# Anthropic's count_tokens

CLAUDE = "claude-sonnet-4-20250514"
COUNT_MSGS = [
    {"role": "user", "content": "what is the weather like"},  # 5 words + 1
    {"role": "assistant", "content": "sunny"},  # 1 + 1
]


def balance(gateway, account_id):
    r = gateway.admin.get(f"/admin/accounts/{account_id}/credits")
    assert r.status_code == 200, r.text
    return r.json()["balance_nanos"]


def test_count_tokens_is_passed_through_unbilled(ant, gateway, mock):
    records, funds = gateway.record_count(), balance(gateway, gateway.account_id)
    raw = ant.messages.with_raw_response.count_tokens(
        model=CLAUDE, system="answer in latin please", messages=COUNT_MSGS
    )
    rid = raw.headers["request-id"]
    count = raw.parse()
    assert count.input_tokens == 4 + 6 + 2
    entry = mock.ledger_for(rid)
    assert entry["api"] == "messages.count_tokens"
    assert entry["input_tokens"] == count.input_tokens == entry["reported_input_tokens"]
    assert entry["auth"] == "sk-upstream-anthropic"
    # Not billed, not recorded.
    time.sleep(0.2)
    assert gateway.record_for(rid) is None
    assert gateway.record_count() == records
    assert balance(gateway, gateway.account_id) == funds


def test_count_tokens_counts_toward_the_rpm_limit(gateway, mock):
    if time.time() % 60 > 50:  # keep the burst inside one UTC minute
        time.sleep(61 - time.time() % 60)
    r = gateway.admin.post(f"/admin/accounts/{gateway.account_id}/keys",
                           json={"name": "count-rpm", "limits": {"rpm_limit": 2}})
    assert r.status_code == 201, r.text
    client = anthropic.Anthropic(base_url=gateway.url, api_key=r.json()["key"], max_retries=0)
    client.messages.count_tokens(model=CLAUDE, messages=COUNT_MSGS)
    # A metered call and a count share the key's requests per minute.
    client.messages.create(model=CLAUDE, max_tokens=5, messages=COUNT_MSGS)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.count_tokens(model=CLAUDE, messages=COUNT_MSGS)
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "retry-after" in info.value.response.headers
    assert mock.ledger_for(info.value.response.headers["request-id"]) is None


def test_count_tokens_errors_in_the_anthropic_shape(ant, gateway, mock):
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="tg-" + "x" * 43, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.count_tokens(model=CLAUDE, messages=COUNT_MSGS)
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    # No key at all, no Anthropic headers: still Anthropic's shape on an Anthropic path.
    r = httpx.post(gateway.v1 + "/messages/count_tokens",
                   json={"model": CLAUDE, "messages": COUNT_MSGS})
    assert r.status_code == 401 and r.json()["type"] == "error"
    # An OpenAI model has no token counter here.
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.count_tokens(model=MODEL, messages=COUNT_MSGS)
    assert info.value.response.json()["error"]["type"] == "invalid_request_error"
    # The upstream's own error keeps its status and message.
    with pytest.raises(anthropic.InternalServerError) as info:
        ant.messages.count_tokens(model=CLAUDE, messages=COUNT_MSGS,
                                  extra_body={"mock": {"error_status": 500}})
    body = info.value.response.json()
    assert body["type"] == "error" and body["error"]["message"] == "mock upstream error"
    # A body without messages is refused before it is forwarded.
    before = len(mock.ledger())
    r = httpx.post(gateway.v1 + "/messages/count_tokens", json={"model": CLAUDE},
                   headers={"x-api-key": gateway.key})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert len(mock.ledger()) == before
