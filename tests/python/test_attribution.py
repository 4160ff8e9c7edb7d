"""Who spent it, through the official SDKs: OpenAI's `user`, Anthropic's `metadata.user_id`,
and the `x-tollgate-user` / `x-tollgate-tags` headers (as `extra_headers` / `default_headers`)
land on each record; the usage APIs filter by them, OpenAI's organization usage groups by
`user_id`, the CSV export carries both columns, and a bad header is a 400 the SDK raises as
`BadRequestError`, naming the header, with nothing forwarded."""

import csv
import io
import time

import anthropic
import httpx
import openai
import pytest

MODEL = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-20250514"


@pytest.fixture
def tenant(gateway):
    """A fresh key (and its own usage) so other tests' records do not mix in."""
    key = gateway.create_key("attribution-test")
    return key


def sums(rows):
    return (
        sum(r["requests"] for r in rows),
        sum(r["prompt_tokens"] for r in rows),
        sum(r["completion_tokens"] for r in rows),
    )


def tok(records):
    return (
        len(records),
        sum(r["input_tokens"] for r in records),
        sum(r["output_tokens"] for r in records),
    )


def test_sdk_attribution_is_recorded_filtered_grouped_and_exported(gateway, tenant):
    oai = openai.OpenAI(base_url=gateway.v1, api_key=tenant["key"], max_retries=0, timeout=15)
    tagged = openai.OpenAI(
        base_url=gateway.v1,
        api_key=tenant["key"],
        max_retries=0,
        timeout=15,
        default_headers={"x-tollgate-tags": "feature=search,team=ads"},
    )
    ant = anthropic.Anthropic(base_url=gateway.url, api_key=tenant["key"], max_retries=0, timeout=15)
    msgs = [{"role": "user", "content": "hello from a customer"}]

    a = tagged.chat.completions.with_raw_response.create(model=MODEL, messages=msgs, user="cust-1")
    b = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=msgs, user="ignored", extra_headers={"x-tollgate-user": "cust-2"}
    )
    c = ant.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=30, messages=msgs, metadata={"user_id": "cust-1"},
        extra_headers={"x-tollgate-tags": "feature=chat"},
    )
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=msgs, stream=True, user="cust-3"
    ) as s:
        for _ in s.iter_lines():
            pass
        d_id = s.headers["x-request-id"]
    e = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="embed me", user="cust-2"
    )
    ids = [a.headers["x-request-id"], b.headers["x-request-id"], c.headers["x-request-id"], d_id,
           e.headers["x-request-id"]]
    recs = [gateway.record_for(i, wait=5) for i in ids]
    ra, rb, rc, rd, re_ = recs
    assert ra["user"] == "cust-1" and ra["tags"] == {"feature": "search", "team": "ads"}
    assert rb["user"] == "cust-2" and "tags" not in rb  # the header wins over `user`
    assert rc["user"] == "cust-1" and rc["tags"] == {"feature": "chat"}
    assert rd["user"] == "cust-3" and rd["streamed"] is True
    assert re_["user"] == "cust-2" and re_["endpoint"] == "embeddings"

    def models(**params):
        r = httpx.get(
            gateway.url + "/v1/usage/models",
            params={"start": "2000-01-01", "end": "2999-12-31", **params},
            headers={"Authorization": f"Bearer {tenant['key']}"},
        )
        assert r.status_code == 200, r.text
        return sums(r.json()["data"])

    assert models(user="cust-1") == tok([ra, rc])
    assert models(user=["cust-2", "cust-3"]) == tok([rb, rd, re_])
    assert models(tag="team=ads") == tok([ra])
    assert models(tag="feature=chat") == tok([rc])
    assert models(key_id=tenant["id"]) == tok(recs)

    # OpenAI's organization usage by user_id (admin): completions and embeddings apart.
    since = int(time.time()) - 3600
    org = gateway.admin.get(
        "/v1/organization/usage/completions",
        params={"start_time": since, "bucket_width": "1h", "group_by": ["user_id", "api_key_id"],
                "api_key_ids": tenant["id"]},
    ).json()
    by_user = {}
    for bucket in org["data"]:
        for r in bucket["results"]:
            t = by_user.setdefault(r["user_id"], [0, 0, 0])
            t[0] += r["num_model_requests"]
            t[1] += r["input_tokens"]
            t[2] += r["output_tokens"]
    assert {k: tuple(v) for k, v in by_user.items()} == {
        "cust-1": tok([ra, rc]), "cust-2": tok([rb]), "cust-3": tok([rd])}
    emb = gateway.admin.get(
        "/v1/organization/usage/embeddings",
        params={"start_time": since, "bucket_width": "1h", "group_by": "user_id",
                "user_ids": "cust-2", "api_key_ids": tenant["id"]},
    ).json()
    results = [r for b in emb["data"] for r in b["results"]]
    assert [(r["user_id"], r["num_model_requests"]) for r in results] == [("cust-2", 1)]

    # The export: `user` and `tags` columns, filtered by tag.
    r = httpx.get(
        gateway.url + "/v1/usage/export",
        params={"format": "csv", "tag": "feature=search", "key_id": tenant["id"]},
        headers={"Authorization": f"Bearer {tenant['key']}"},
    )
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["request_id"], x["user"], x["tags"]) for x in rows] == [
        (ra["request_id"], "cust-1", "feature=search,team=ads")]


@pytest.mark.parametrize(
    "header,value",
    [
        ("x-tollgate-tags", "feature=a,feature=b"),
        ("x-tollgate-tags", "no-equals-sign"),
        ("x-tollgate-tags", ",".join(f"k{i}=v" for i in range(11))),
        ("x-tollgate-user", "u" * 257),
    ],
)
def test_a_bad_attribution_header_is_a_400_naming_it(gateway, tenant, mock, header, value):
    oai = openai.OpenAI(base_url=gateway.v1, api_key=tenant["key"], max_retries=0, timeout=15)
    before = len(mock.ledger())
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], extra_headers={header: value}
        )
    assert e.value.body["param"] == header
    ant = anthropic.Anthropic(base_url=gateway.url, api_key=tenant["key"], max_retries=0, timeout=15)
    with pytest.raises(anthropic.BadRequestError) as e:
        ant.messages.create(model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "x"}],
                            extra_headers={header: value})
    assert e.value.body["type"] == "error" and header in e.value.body["error"]["message"]
    assert len(mock.ledger()) == before
