"""The official anthropic SDK (which authenticates with `x-api-key`) against the gateway."""

import anthropic
import pytest

from conftest import assert_record_matches_ledger

MODEL = "claude-sonnet-4-20250514"
SYSTEM = "answer in latin please"  # 4 words, no +1
MSGS = [
    {"role": "user", "content": "what is the weather like"},  # 5 words + 1
    {"role": "assistant", "content": "sunny"},  # 1 + 1
    {"role": "user", "content": "and tomorrow"},  # 2 + 1
]
INPUT = 4 + 6 + 2 + 3  # 15
LOREM16 = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et"
)


def assert_messages_record(rec, gateway, *, streamed):
    assert rec["account_id"] == gateway.account_id and rec["key_id"] == gateway.key_id
    assert rec["endpoint"] == "messages"
    assert rec["model_requested"] == MODEL and rec["model_served"] == MODEL
    assert rec["provider"] == "mockant" and rec["owned_by"] == "anthropic"
    assert rec["status"] == "success" and rec["http_status"] == 200
    assert rec["streamed"] is streamed


def test_messages_non_stream(ant, gateway, mock):
    msg = ant.messages.create(model=MODEL, max_tokens=100, system=SYSTEM, messages=MSGS)
    rid = msg._request_id
    assert rid and rid.startswith("req_")
    assert msg.content[0].text == LOREM16
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == INPUT and msg.usage.output_tokens == 16

    entry = mock.ledger_for(rid)
    assert entry["api"] == "messages" and entry["streamed"] is False
    assert entry["input_tokens"] == INPUT and entry["output_tokens"] == 16
    assert entry["auth"] == "sk-upstream-anthropic"
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert_messages_record(rec, gateway, streamed=False)
    # 15 * 3e9 + 16 * 1.5e10 = 2.85e11 -> 285,000
    assert rec["cost_nanos"] == 285_000


def test_messages_max_tokens_caps_output(ant, gateway, mock):
    msg = ant.messages.create(model=MODEL, max_tokens=5, messages=MSGS)
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 5
    entry = mock.ledger_for(msg._request_id)
    rec = gateway.record_for(msg._request_id)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert rec["output_tokens"] == 5


def test_messages_stream_helper(ant, gateway, mock):
    with ant.messages.stream(
        model=MODEL, max_tokens=100, system=SYSTEM, messages=MSGS,
        extra_body={"mock": {"output_tokens": 9}},
    ) as stream:
        rid = stream.response.headers["request-id"]
        assert stream.response.headers["x-request-id"] == rid
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(LOREM16.split()[:9])
    assert final.usage.input_tokens == INPUT and final.usage.output_tokens == 9

    entry = mock.ledger_for(rid)
    assert entry["streamed"] is True and entry["completed"] is True
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert_messages_record(rec, gateway, streamed=True)
    assert rec["ttft_ms"] is not None
    # 15 * 3e9 + 9 * 1.5e10 = 1.8e11 -> 180,000
    assert rec["cost_nanos"] == 180_000


def test_messages_create_stream_true(ant, gateway, mock):
    stream = ant.messages.create(model=MODEL, max_tokens=100, messages=MSGS, stream=True)
    rid = stream.response.headers["request-id"]
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("content_block_delta") == 16
    delta = [e for e in events if e.type == "message_delta"][0]
    assert delta.usage.output_tokens == 16

    entry = mock.ledger_for(rid)
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    assert_messages_record(rec, gateway, streamed=True)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_cached_tokens(ant, gateway, mock, stream):
    kwargs = dict(
        model=MODEL, max_tokens=100, system=SYSTEM, messages=MSGS,
        extra_body={"mock": {"cached_tokens": 6}},
    )
    if stream:
        with ant.messages.stream(**kwargs) as s:
            rid = s.response.headers["request-id"]
            usage = s.get_final_message().usage
    else:
        msg = ant.messages.create(**kwargs)
        rid = msg._request_id
        usage = msg.usage
    # Anthropic's input_tokens excludes cache reads...
    assert usage.input_tokens == INPUT - 6
    assert usage.cache_read_input_tokens == 6

    entry = mock.ledger_for(rid)
    assert entry["input_tokens"] == INPUT and entry["cached_tokens"] == 6
    rec = gateway.record_for(rid)
    assert_record_matches_ledger(rec, entry, MODEL)
    # ...the record's input_tokens is the total.
    assert rec["input_tokens"] == INPUT and rec["cached_tokens"] == 6
    # (15-6) * 3e9 + 6 * 3e8 + 16 * 1.5e10 = 2.688e11 -> 268,800
    assert rec["cost_nanos"] == 268_800


def test_bad_key_is_authentication_error_in_anthropic_shape(gateway, mock):
    before = len(mock.ledger())
    client = anthropic.Anthropic(base_url=gateway.url, api_key="tg-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=MSGS)
    err = info.value
    assert err.status_code == 401
    assert err.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid API key"},
    }
    assert err.response.headers["request-id"] == err.response.headers["x-request-id"]
    assert gateway.record_for(err.response.headers["x-request-id"]) is None
    assert len(mock.ledger()) == before


def test_unknown_model_is_not_found_error(ant, gateway, mock):
    before = len(mock.ledger())
    with pytest.raises(anthropic.NotFoundError) as info:
        ant.messages.create(model="claude-nonexistent-9", max_tokens=10, messages=MSGS)
    err = info.value
    assert err.status_code == 404
    assert err.body["type"] == "error"
    assert err.body["error"]["type"] == "not_found_error"
    assert "claude-nonexistent-9" in err.body["error"]["message"]
    # Counted as refused, charged nothing, never forwarded.
    rec = gateway.record_for(err.request_id)
    assert rec["status"] == "refused" and rec["http_status"] == 404, rec
    assert rec["model_requested"] == "claude-nonexistent-9" and rec["charged_nanos"] == 0, rec
    assert len(mock.ledger()) == before


def test_openai_model_on_messages_endpoint_is_rejected(ant, gateway, mock):
    before = len(mock.ledger())
    with pytest.raises(anthropic.BadRequestError) as info:
        ant.messages.create(model="gpt-4o", max_tokens=10, messages=MSGS)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert len(mock.ledger()) == before


@pytest.mark.parametrize(
    "status,exc,kind",
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
    ],
)
def test_upstream_error_status(ant, gateway, mock, status, exc, kind):
    with pytest.raises(exc) as info:
        ant.messages.create(
            model=MODEL, max_tokens=10, messages=MSGS,
            extra_body={"mock": {"error_status": status}},
        )
    err = info.value
    assert err.status_code == status
    assert err.body == {"type": "error", "error": {"type": kind, "message": "mock upstream error"}}
    rid = err.request_id
    assert mock.ledger_for(rid)["status"] == status
    rec = gateway.record_for(rid)
    assert rec["status"] == "error" and rec["http_status"] == status
    assert rec["error_code"] == "upstream_error" and rec["cost_nanos"] == 0


def test_models_list(ant):
    """x-api-key callers get the model list in Anthropic's shape."""
    page = ant.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids and "gpt-4o" in ids
    assert "gemini-2.5-pro" not in ids
    assert ids == sorted(ids)
    assert page.has_more is False
    assert page.first_id == ids[0] and page.last_id == ids[-1]
    sonnet = next(m for m in page.data if m.id == MODEL)
    assert sonnet.type == "model" and sonnet.display_name == "Claude Sonnet 4"
