"""`GET /v1/usage/insights` after a scripted workload through the gateway with the official
OpenAI SDK: known duplicates, a retry loop after 429s, abandoned streams, a growing
conversation and a cache-hit pattern. Every figure is computed here, by hand, from the script
and the records the gateway wrote; the insights must equal them exactly."""

import time

import httpx
import openai
import pytest

from conftest import PRICES, Gateway, Mock, cost_nanos

MODEL = "gpt-4o"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # A mock of its own: the script turns its global knobs (429s, latency, cache reads).
    mock = Mock(tmp_path_factory.mktemp("insights-mock"))
    gw = Gateway(mock, tmp_path_factory.mktemp("insights-gw"))
    yield mock, gw
    gw.close()
    mock.close()


def knobs(mock, **kv):
    mock.http.post("/_mock/config", json=kv).raise_for_status()


def tenant(gw, name):
    account = gw.create_account(name, grant_usd="50")
    key = gw.create_key(name + "-key", account)
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=15)
    return account, key, client


def ask(client, messages, **kw):
    r = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, **kw)
    return r.headers["x-request-id"]


def insights(gw, key, **params):
    r = httpx.get(gw.url + "/v1/usage/insights", params=params,
                  headers={"Authorization": f"Bearer {key['key']}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def money(nanos):
    return {"nanos": nanos, "usd": f"{nanos // 10**9}.{nanos % 10**9:09d}"}


def test_insights_equal_the_hand_computed_figures(world):
    mock, gw = world
    account, key, oa = tenant(gw, "insights-a")
    q = lambda text: [{"role": "user", "content": text}]  # noqa: E731

    # 1. The same question three times, all answered: two duplicates.
    dup = [ask(oa, q("what is the capital of France")) for _ in range(3)]

    # 2. A retry loop: three 429s from the upstream, then the answer.
    knobs(mock, error_status=429)
    loop = []
    for _ in range(3):
        with pytest.raises(openai.RateLimitError) as e:
            oa.chat.completions.create(model=MODEL, messages=q("summarise this report please"))
        loop.append(e.value.response.headers["x-request-id"])
    knobs(mock, error_status=None)
    loop.append(ask(oa, q("summarise this report please")))

    # 3. Two streams the client abandons before the first event.
    knobs(mock, latency_ms=1200)
    abandoned = []
    for text in ["tell me a long story", "tell me another long story"]:
        with pytest.raises(httpx.ReadTimeout):
            with httpx.stream(
                "POST", gw.v1 + "/chat/completions",
                json={"model": MODEL, "stream": True, "messages": q(text)},
                headers={"Authorization": f"Bearer {key['key']}"},
                timeout=httpx.Timeout(5, read=0.3),
            ) as s:
                s.read()
    knobs(mock, latency_ms=0)

    # 4. A conversation resending its whole history for four turns; turns 2 and 3 read 5 tokens
    # from the cache, turn 4 none.
    history = [{"role": "system", "content": "you are terse"},
               {"role": "user", "content": "first question here"}]
    turns = []
    for n in range(4):
        knobs(mock, cached_tokens=5 if n in (1, 2) else 0)
        turns.append(ask(oa, history))
        history = history + [{"role": "assistant", "content": f"answer number {n}"},
                             {"role": "user", "content": f"follow up question {n}"}]
    knobs(mock, cached_tokens=0)

    # Every record, as the gateway wrote it.
    recs = {}
    for rid in dup + loop + turns:
        recs[rid] = gw.record_for(rid, wait=10)
    cancelled = []
    for _ in range(100):
        cancelled = [r for r in gw.records(account_id=account) if r["status"] == "cancelled"]
        if len(cancelled) == 2:
            break
        time.sleep(0.1)
    assert len(cancelled) == 2, "the abandoned streams were not recorded"
    abandoned = sorted(cancelled, key=lambda r: (r["created_at_ms"], r["request_id"]))
    for r in abandoned:
        recs[r["request_id"]] = r
    assert all(recs[i]["status"] == "error" and recs[i]["http_status"] == 429 for i in loop[:3])
    assert all(recs[i]["status"] == "success" for i in dup + loop[3:] + turns)
    assert len({recs[i]["fingerprint"] for i in dup}) == 1
    assert len({recs[i]["conversation"] for i in turns}) == 1
    assert len({recs[i]["fingerprint"] for i in turns}) == 4

    got = insights(gw, key, period="today", history_cap=10, limit=100)
    assert got["object"] == "usage.insights" and got["account_id"] == account
    assert got["fingerprints"] == "on"
    all_ids = dup + loop + [r["request_id"] for r in abandoned] + turns
    assert got["records"] == got["fingerprinted"] == len(all_ids) == 13

    # Duplicates: the 2nd and 3rd ask.
    d = got["duplicates"]
    wasted = [recs[i] for i in dup[1:]]
    assert d["count"] == 2 and d["window_secs"] == 600
    assert d["wasted_input_tokens"] == sum(r["input_tokens"] for r in wasted)
    assert d["wasted_output_tokens"] == sum(r["output_tokens"] for r in wasted)
    assert d["wasted_cost"] == money(sum(r["cost_nanos"] for r in wasted))
    assert d["records"] == {"total": 2, "request_ids": dup[1:], "next_offset": None}
    assert [(t["fingerprint"], t["model"], t["key_ids"], t["requests"], t["duplicates"])
            for t in d["top"]] == [(recs[dup[0]]["fingerprint"], MODEL, [key["id"]], 3, 2)]

    # The retry loop: four attempts, the first three failed.
    rl = got["retry_loops"]
    failed_cost = sum(recs[i]["cost_nanos"] for i in loop[:3])
    assert (rl["count"], rl["attempts"], rl["failed_attempts"], rl["resolved"]) == (1, 4, 3, 1)
    assert rl["failed_cost"] == money(failed_cost)
    assert rl["records"]["request_ids"] == loop[:3]
    assert rl["by_key"] == [{"key_id": key["id"], "count": 1, "requests": 3,
                             "cost": money(failed_cost)}]
    assert rl["top"][0]["fingerprint"] == recs[loop[0]]["fingerprint"]
    assert rl["top"][0]["resolved"] is True

    # The abandoned streams, paid for all the same.
    un = got["unused_responses"]
    assert un["count"] == 2
    assert un["cost"] == money(sum(r["cost_nanos"] for r in abandoned))
    assert un["cost"]["nanos"] > 0, "the upstream answered them and billed the tokens"
    assert un["output_tokens"] == sum(r["output_tokens"] for r in abandoned)
    assert un["records"]["request_ids"] == [r["request_id"] for r in abandoned]

    # The growing conversation, and what a 10-token history cap would have saved.
    g = got["conversation_growth"]
    t = [recs[i] for i in turns]
    inputs = [r["input_tokens"] for r in t]
    assert inputs == sorted(set(inputs)), f"input must rise every turn: {inputs}"
    saved = sum(cost_nanos(max(0, r["input_tokens"] - 10), 0, 0, 0, PRICES[MODEL]) for r in t)
    assert saved > 0
    assert (g["count"], g["turns"], g["history_cap_tokens"]) == (1, 4, 10)
    assert g["input_tokens"] == sum(inputs)
    assert g["cost"] == money(sum(r["cost_nanos"] for r in t))
    assert g["savings_at_cap"] == money(saved)
    assert g["records"]["request_ids"] == turns
    assert [(c["conversation"], c["turns"], c["first_input_tokens"], c["last_input_tokens"])
            for c in g["top"]] == [(t[0]["conversation"], 4, inputs[0], inputs[-1])]

    # The model mix: every token at gpt-4o-mini's prices instead.
    mm = got["model_mix"]
    answered = [r for r in recs.values() if r["status"] != "refused"]
    total = sum(r["cost_nanos"] for r in answered)
    on_mini = sum(cost_nanos(r["input_tokens"], r["output_tokens"], r["cached_tokens"],
                             r["cache_write_tokens"], PRICES["gpt-4o-mini"]) for r in answered)
    assert mm["total_cost"] == money(total)
    [m] = mm["models"]
    assert (m["model"], m["requests"], m["sibling"]) == (MODEL, len(answered), "gpt-4o-mini")
    assert m["cost"] == money(total) and m["share_of_cost"] == 1.0
    assert m["sibling_cost"] == money(on_mini)
    assert m["savings"] == money(total - on_mini) == mm["potential_savings"]

    # The cache: turns 2 and 3 read 5 tokens each; repeated openings were answered 5 times
    # (ask 2 and 3, turns 2 to 4), three of them without a cache read (ask 2 and 3, turn 4).
    ca = got["cache"]
    p_in, _, p_cached, _ = PRICES[MODEL]
    assert ca["cached_tokens"] == 10
    assert ca["saved"] == money(2 * 5 * (p_in - p_cached) // 1_000_000)
    assert (ca["repeated_prefix_requests"], ca["uncached_repeated_prefix_requests"]) == (5, 3)
    assert ca["uncached_repeated_share"] == 0.6
    assert ca["records"]["request_ids"] == dup[1:] + turns[3:]

    # One key's records: here, all of them; `user` and `tag` are refused, not ignored.
    mine = insights(gw, key, period="today", key_id=key["id"], history_cap=10, limit=100)
    assert mine["key_id"] == key["id"] and mine["duplicates"] == d
    r = httpx.get(gw.url + "/v1/usage/insights", params={"user": "u1"},
                  headers={"Authorization": f"Bearer {key['key']}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "user"

    # One section, paged.
    one = insights(gw, key, period="today", section="duplicates", limit=1, offset=1)
    assert "retry_loops" not in one and "cache" not in one
    assert one["duplicates"]["records"] == {"total": 2, "request_ids": dup[2:],
                                            "next_offset": None}
    first = insights(gw, key, period="today", section="duplicates", limit=1)
    assert first["duplicates"]["records"]["next_offset"] == 1

    # Another account sending the same question: the same shape, an unrelated fingerprint.
    _, key_b, ob = tenant(gw, "insights-b")
    [ask(ob, q("what is the capital of France")) for _ in range(2)]
    other = insights(gw, key_b, period="today")
    assert other["duplicates"]["count"] == 1
    assert other["duplicates"]["top"][0]["fingerprint"] != d["top"][0]["fingerprint"]
    # And account A's figures did not move.
    assert insights(gw, key, period="today", history_cap=10, limit=100)["duplicates"] == d


def test_bad_insights_queries_are_refused_in_the_callers_shape(world):
    _, gw = world
    _, key, _ = tenant(gw, "insights-bad")
    h = {"Authorization": f"Bearer {key['key']}"}
    for params, param in [
        ({"section": "everything"}, "section"),
        ({"period": "last_decade"}, "period"),
        ({"start": "2026-12-02", "end": "2026-12-01"}, "start"),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "start"),
        ({"limit": "5000"}, "limit"),
        ({"history_cap": "-1"}, "history_cap"),
        ({"start": "yesterday-ish"}, "start"),
    ]:
        r = httpx.get(gw.url + "/v1/usage/insights", params=params, headers=h)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["param"] == param, (params, r.text)
    r = httpx.get(gw.url + "/v1/usage/insights", params={"account_id": gw.account_id}, headers=h)
    assert r.status_code == 404
    r = httpx.get(gw.url + "/v1/usage/insights", params={"section": "x"},
                  headers={"x-api-key": key["key"], "anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(gw.url + "/v1/usage/insights")
    assert r.status_code == 401
