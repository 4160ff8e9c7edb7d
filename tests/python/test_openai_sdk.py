"""The official openai SDK against the gateway: every request's usage record must equal what the
mock upstream says it served (same request id), and be priced by the documented formula."""

import openai
import pytest

from conftest import (
    PRICES,
    assert_cost_consistent,
    assert_record_matches_ledger,
    cost_nanos,
)

MSGS = [
    {"role": "system", "content": "you are terse"},  # 3 words + 1
    {"role": "user", "content": "hello there big world"},  # 4 words + 1
]
MSGS_INPUT = 9
LOREM16 = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et"
)


def assert_common(rec, gateway, *, endpoint, model, streamed, provider="mock", owned_by="openai"):
    assert rec["account_id"] == gateway.account_id
    assert rec["key_id"] == gateway.key_id
    assert rec["endpoint"] == endpoint
    assert rec["model_requested"] == model
    assert rec["model_served"] == model
    assert rec["provider"] == provider
    assert rec["owned_by"] == owned_by
    assert rec["source"] == "platform"
    assert rec["streamed"] is streamed
    assert rec["latency_ms"] >= 0


def test_chat_non_stream(oai, gateway, mock):
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
    rid = raw.headers["x-request-id"]
    assert rid.startswith("req_")
    completion = raw.parse()
    assert completion._request_id == rid
    assert completion.choices[0].message.content == LOREM16
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == MSGS_INPUT
    assert completion.usage.completion_tokens == 16

    entry = mock.ledger_for(rid)
    assert entry["api"] == "chat.completions" and entry["streamed"] is False
    assert entry["input_tokens"] == MSGS_INPUT and entry["output_tokens"] == 16
    # Only the provider credential went upstream, never the caller's key.
    assert entry["auth"] == "Bearer sk-upstream-openai"

    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "gpt-4o")
    assert_common(rec, gateway, endpoint="chat.completions", model="gpt-4o", streamed=False)
    assert rec["status"] == "success" and rec["http_status"] == 200
    assert rec["error_code"] is None
    # 9 * 2.5e9 + 16 * 1e10 = 1.825e11 nano-USD per M tokens -> 182,500 nano-USD.
    assert rec["cost_nanos"] == 182_500


def test_chat_stream_without_stream_options_hides_usage_chunk(oai, gateway, mock):
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    rid = stream.response.headers["x-request-id"]
    chunks = list(stream)
    assert chunks, "no chunks"
    # The gateway asked upstream for usage on the client's behalf; the client must not see it.
    assert [c.usage for c in chunks if c.usage is not None] == []
    assert all(c.choices for c in chunks), "a usage-only chunk leaked to the client"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == LOREM16
    assert chunks[-1].choices[0].finish_reason == "stop"

    entry = mock.ledger_for(rid)
    assert entry["streamed"] is True and entry["completed"] is True
    assert entry["usage_reported"] is True, "gateway did not request usage upstream"
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "gpt-4o-mini")
    assert_common(rec, gateway, endpoint="chat.completions", model="gpt-4o-mini", streamed=True)
    assert rec["status"] == "success" and rec["http_status"] == 200
    assert rec["ttft_ms"] is not None and rec["ttft_ms"] >= 0
    # 9 * 1.5e8 + 16 * 6e8 = 1.095e10 -> 10,950
    assert rec["cost_nanos"] == 10_950


def test_chat_stream_with_include_usage(oai, gateway, mock):
    stream = oai.chat.completions.create(
        model="gpt-4o",
        messages=MSGS,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"mock": {"output_tokens": 7}},
    )
    rid = stream.response.headers["x-request-id"]
    chunks = list(stream)
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, "expected exactly one usage chunk"
    usage_chunk = with_usage[0]
    assert usage_chunk is chunks[-1] and usage_chunk.choices == []

    entry = mock.ledger_for(rid)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "gpt-4o")
    assert usage_chunk.usage.prompt_tokens == rec["input_tokens"] == MSGS_INPUT
    assert usage_chunk.usage.completion_tokens == rec["output_tokens"] == 7
    assert usage_chunk.usage.total_tokens == MSGS_INPUT + 7
    assert rec["status"] == "success" and rec["streamed"] is True


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_cached_and_reasoning_tokens(oai, gateway, mock, stream):
    kwargs = dict(
        model="gpt-4o",
        messages=MSGS,
        extra_body={"mock": {"cached_tokens": 3, "reasoning_tokens": 2}},
    )
    if stream:
        s = oai.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
        rid = s.response.headers["x-request-id"]
        usage = [c.usage for c in s if c.usage is not None][-1]
    else:
        raw = oai.chat.completions.with_raw_response.create(**kwargs)
        rid = raw.headers["x-request-id"]
        usage = raw.parse().usage
    assert usage.prompt_tokens == MSGS_INPUT
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens == 18
    assert usage.completion_tokens_details.reasoning_tokens == 2

    entry = mock.ledger_for(rid)
    assert (entry["cached_tokens"], entry["reasoning_tokens"]) == (3, 2)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "gpt-4o")
    assert rec["input_tokens"] == MSGS_INPUT  # total, cached included
    assert rec["output_tokens"] == 18  # reasoning included
    # (9-3) * 2.5e9 + 3 * 1.25e9 + 18 * 1e10 = 1.9875e11 -> 198,750
    assert rec["cost_nanos"] == 198_750


def test_embeddings(oai, gateway, mock):
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one two three", "four five"]
    )
    rid = raw.headers["x-request-id"]
    resp = raw.parse()
    assert len(resp.data) == 2
    assert resp.usage.prompt_tokens == 5

    entry = mock.ledger_for(rid)
    assert entry["api"] == "embeddings" and entry["input_tokens"] == 5
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "text-embedding-3-small")
    assert_common(
        rec, gateway, endpoint="embeddings", model="text-embedding-3-small", streamed=False
    )
    assert rec["output_tokens"] == 0
    assert rec["status"] == "success"
    assert rec["cost_nanos"] == 100  # 5 * 2e7 / 1e6


def test_models_list(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-20250514"} <= ids
    # Config-priced models routed by a configured provider are listed too...
    assert {"gpt-dead-1", "gpt-half-1"} <= ids
    # ...but priced models no configured provider routes are not.
    assert "gemini-2.5-pro" not in ids


def test_models_list_needs_a_key(gateway):
    client = openai.OpenAI(base_url=gateway.v1, api_key="tg-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_omitted_usage_is_estimated(oai, gateway, mock, stream):
    kwargs = dict(model="gpt-4o", messages=MSGS, extra_body={"mock": {"omit_usage": True}})
    if stream:
        s = oai.chat.completions.create(stream=True, **kwargs)
        rid = s.response.headers["x-request-id"]
        chunks = list(s)
        assert all(c.usage is None for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == LOREM16
    else:
        raw = oai.chat.completions.with_raw_response.create(**kwargs)
        rid = raw.headers["x-request-id"]
        assert raw.parse().usage is None

    entry = mock.ledger_for(rid)
    assert entry["usage_reported"] is False and entry["completed"] is True
    rec = gateway.record_for(rid)
    assert rec["status"] == "success"
    assert rec["provenance"] == "estimated"
    # Counted locally with the bundled o200k BPE: 3 per message + 3 + 4 words + 3 of reply
    # priming = 16 input; the 16 generated lorem-ipsum words are 17 o200k tokens.
    assert rec["input_tokens"] == 16
    assert rec["output_tokens"] == 17
    assert rec["cost_nanos"] == 210_000  # 16 * 2.5e9 + 17 * 1e10 = 2.1e11
    assert rec["cached_tokens"] == 0 and rec["reasoning_tokens"] == 0
    assert_cost_consistent(rec, "gpt-4o")


def test_embeddings_without_usage_are_estimated(oai, gateway, mock):
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["one two three", "four five"],
        extra_body={"mock": {"omit_usage": True}},
    )
    rid = raw.headers["x-request-id"]
    rec = gateway.record_for(rid)
    assert rec["provenance"] == "estimated"
    assert rec["input_tokens"] == 5  # each plain English word is one o200k token
    assert rec["output_tokens"] == 0
    assert_cost_consistent(rec, "text-embedding-3-small")


@pytest.mark.parametrize(
    "status,exc",
    [(500, openai.InternalServerError), (429, openai.RateLimitError), (400, openai.BadRequestError)],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_upstream_error_status(oai, gateway, mock, status, exc, stream):
    with pytest.raises(exc) as info:
        oai.chat.completions.create(
            model="gpt-4o",
            messages=MSGS,
            stream=stream,
            extra_body={"mock": {"error_status": status}},
        )
    err = info.value
    assert err.status_code == status
    assert "mock upstream error" in err.message
    body = err.response.json()
    assert body["error"]["message"] == "mock upstream error"
    assert body["error"]["code"] == "upstream_error"
    rid = err.response.headers["x-request-id"]

    entry = mock.ledger_for(rid)
    assert entry["status"] == status
    rec = gateway.record_for(rid)
    assert rec["status"] == "error"
    assert rec["http_status"] == status
    assert rec["error_code"] == "upstream_error"
    assert (rec["input_tokens"], rec["output_tokens"], rec["cost_nanos"]) == (0, 0, 0)


@pytest.mark.parametrize(
    "output_tokens,want",
    # 0.5 nano-USD per output token, rounded half up once per request.
    [(1, 1), (3, 2), (5, 3), (4, 2)],
)
def test_cost_rounds_half_up_once(oai, gateway, mock, output_tokens, want):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-half-1",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"mock": {"output_tokens": output_tokens}},
    )
    rid = raw.headers["x-request-id"]
    entry = mock.ledger_for(rid)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "gpt-half-1")
    assert rec["owned_by"] == "custom"
    assert rec["cost_nanos"] == want


def test_cost_with_fractional_prices(oai, gateway, mock):
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-frac-1",
        messages=MSGS,
        extra_body={"mock": {"cached_tokens": 4}},
    )
    rid = raw.headers["x-request-id"]
    entry = mock.ledger_for(rid)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, "gpt-frac-1")
    # Cached input defaults to the input price when the config names none.
    # 9 * 123456700 + 16 * 765432100 = 13358023900 -> 13358.0239 -> 13358
    assert rec["cost_nanos"] == cost_nanos(9, 16, 4, 0, PRICES["gpt-frac-1"]) == 13_358
