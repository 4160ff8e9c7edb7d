"""End-to-end fixtures: a real mock-upstream and real tollgate gateways, as subprocesses.

* ``mock`` (session): one mock-upstream process; ``mock.ledger_for(request_id)`` returns the
  mock's ledger entry for a gateway request id (the gateway sends it upstream as
  ``x-tollgate-request-id``), ``mock.reset()`` clears the ledger.
* ``gateway`` (session): one tollgate process routing ``gpt-*``/``text-embedding-*`` and
  ``claude-*`` to the mock, plus ``gpt-dead-*``/``claude-dead-*`` to a closed port. It has an
  admin key, a user account and a user key; ``gateway.record_for(request_id)`` reads the
  usage record through the admin API.
* ``start_gateway(extra_config="", **server_overrides)``: another gateway with its own data
  dir, for tests that need a different ``[server]`` section (e.g. a small ``max_body_bytes``)
  or more providers and prices (``extra_config`` is appended to the TOML file).

The binaries come from ``$CARGO_TARGET_DIR/debug`` (default ``<repo>/target/debug``);
``TOLLGATE_BIN`` / ``MOCK_UPSTREAM_BIN`` override each path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]

# Nano-USD per million tokens: (input, output, cached_input, cache_write). Independent of the
# gateway's table on purpose: a wrong price in the gateway must fail the tests.
PRICES = {
    "gpt-4o": (2_500_000_000, 10_000_000_000, 1_250_000_000, 2_500_000_000),
    "gpt-4o-mini": (150_000_000, 600_000_000, 75_000_000, 150_000_000),
    "claude-sonnet-4-20250514": (3_000_000_000, 15_000_000_000, 300_000_000, 3_750_000_000),
    "text-embedding-3-small": (20_000_000, 0, 20_000_000, 20_000_000),
    # Config-defined prices (see GATEWAY_EXTRA_CONFIG).
    "gpt-dead-1": (1_000_000_000, 1_000_000_000, 1_000_000_000, 1_000_000_000),
    "claude-dead-1": (1_000_000_000, 1_000_000_000, 1_000_000_000, 1_000_000_000),
    # 0.0005 USD/Mtok of output = half a nano-USD per token: exercises round-half-up.
    "gpt-half-1": (0, 500_000, 0, 0),
    # Awkward decimals: a cost with a fractional part in nano-USD.
    "gpt-frac-1": (123_456_700, 765_432_100, 123_456_700, 123_456_700),
}

GATEWAY_EXTRA_CONFIG = """
[providers.dead]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-dead"
models = ["gpt-dead-*"]

[providers.deadant]
kind = "anthropic"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-dead-anthropic"
models = ["claude-dead-*"]

[prices."gpt-dead-1"]
input = "1"
output = "1"

[prices."claude-dead-1"]
input = "1"
output = "1"

[prices."gpt-half-1"]
input = "0"
output = "0.0005"
cached_input = "0"
cache_write = "0"

[prices."gpt-frac-1"]
input = "0.1234567"
output = "0.7654321"
"""

ADMIN_KEY_RE = re.compile(r"tg-[A-Za-z0-9]{43}")
# Credits granted to the test account: credits are enforced (402 without them).
GRANT_USD = "1000"
STARTUP_TIMEOUT = 20.0
HTTP_TIMEOUT = httpx.Timeout(15.0)


def usd_to_nanos(usd: str) -> int:
    whole, _, frac = usd.partition(".")
    return int(whole) * 10**9 + int((frac + "0" * 9)[:9])


def cost_nanos(input_tokens, output_tokens, cached_tokens, cache_write_tokens, prices):
    """The documented cost formula: each class at its own price, summed, rounded half up once."""
    p_in, p_out, p_cached, p_cw = prices
    cached = min(cached_tokens, input_tokens)
    writes = min(cache_write_tokens, input_tokens - cached)
    plain = input_tokens - cached - writes
    total = plain * p_in + cached * p_cached + writes * p_cw + output_tokens * p_out
    q, r = divmod(total, 1_000_000)
    return q + (1 if 2 * r >= 1_000_000 else 0)


def expected_cost_from_ledger(entry, model):
    """Cost the gateway must charge for what the mock says it served (no cache writes here)."""
    return cost_nanos(
        entry["input_tokens"], entry["output_tokens"], entry["cached_tokens"], 0, PRICES[model]
    )


def assert_record_matches_ledger(rec, entry, model):
    """The record's tokens equal the mock's ground truth, and its price and cost are right."""
    assert entry is not None, "the mock never saw this request"
    assert rec is not None, "the gateway has no record for this request"
    assert rec["request_id"] == entry["request_id"]
    got = {
        k: rec[k] for k in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    }
    want = {
        k: entry[k] for k in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    }
    assert got == want
    assert rec["cache_write_tokens"] == 0
    assert rec["provenance"] == "provider"
    assert_prices(rec, model)
    assert rec["cost_nanos"] == expected_cost_from_ledger(entry, model)
    assert_charged(rec)


def assert_charged(rec):
    """Platform-key requests are charged exactly their cost."""
    assert rec["source"] == "platform"
    assert rec["charged_nanos"] == rec["cost_nanos"]


def assert_prices(rec, model):
    assert (
        rec["price_input"],
        rec["price_output"],
        rec["price_cached_input"],
        rec["price_cache_write"],
    ) == PRICES[model]


def assert_cost_consistent(rec, model):
    """cost_nanos equals the formula applied to the record's own tokens and the known prices."""
    assert_prices(rec, model)
    assert rec["cost_nanos"] == cost_nanos(
        rec["input_tokens"],
        rec["output_tokens"],
        rec["cached_tokens"],
        rec["cache_write_tokens"],
        PRICES[model],
    )
    assert_charged(rec)


# --------------------------------------------------------------------------------------------
# Processes


def _target_dir() -> Path:
    d = os.environ.get("CARGO_TARGET_DIR")
    if d:
        p = Path(d)
        return p if p.is_absolute() else REPO / p
    return REPO / "target"


def _binary(name: str, env_var: str) -> Path:
    override = os.environ.get(env_var)
    path = Path(override) if override else _target_dir() / "debug" / name
    if not path.is_file():
        pytest.exit(
            f"{path} not found: run `cargo build --workspace` first (or set {env_var})",
            returncode=2,
        )
    return path


def _clean_env(extra: dict | None = None) -> dict:
    # TOLLGATE_* variables override the config file; keep the run hermetic.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env["TOLLGATE_LOG"] = os.environ.get("TOLLGATE_TEST_LOG", "info")
    env.update(extra or {})
    return env


def _wait_for(path: Path, pattern: re.Pattern, proc: subprocess.Popen, what: str) -> re.Match:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        m = pattern.search(text)
        if m:
            return m
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stderr = ""
    err_path = path.with_suffix(".err")
    if err_path.exists():
        stderr = err_path.read_text(errors="replace")[-4000:]
    raise RuntimeError(
        f"{what} did not start (exit={proc.poll()}); stdout={path.read_text(errors='replace')!r}"
        f" stderr={stderr!r}"
    )


def _spawn(argv: list, workdir: Path, stem: str, env: dict | None = None) -> subprocess.Popen:
    """Starts a process with stdout/stderr in `<stem>.out` / `<stem>.err` under `workdir`."""
    with open(workdir / f"{stem}.out", "wb") as out, open(workdir / f"{stem}.err", "wb") as err:
        return subprocess.Popen(
            argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir,
            env=_clean_env(env),
        )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Mock:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        out = workdir / "mock.out"
        self.proc = _spawn(
            [str(_binary("mock-upstream", "MOCK_UPSTREAM_BIN")), "--port", "0"], workdir, "mock"
        )
        m = _wait_for(
            out, re.compile(r"mock-upstream listening on (http://127\.0\.0\.1:(\d+))"), self.proc,
            "mock-upstream",
        )
        self.url = m.group(1)
        self.port = int(m.group(2))
        self.http = httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT)

    def ledger(self) -> list:
        r = self.http.get("/_mock/ledger")
        r.raise_for_status()
        return r.json()

    def ledger_for(self, request_id: str):
        """The mock's single ledger entry for a gateway request id (None if it saw none)."""
        assert request_id, "no request id"
        entries = [e for e in self.ledger() if e["request_id"] == request_id]
        assert len(entries) <= 1, f"the mock saw {request_id} {len(entries)} times: {entries}"
        return entries[0] if entries else None

    def reset(self) -> None:
        self.http.post("/_mock/reset").raise_for_status()

    def close(self) -> None:
        self.http.close()
        _stop(self.proc)


class Gateway:
    def __init__(self, mock: Mock, workdir: Path, extra_config: str = "", env: dict | None = None,
                 **server_overrides):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.mock = mock
        server = {
            "listen": "127.0.0.1:0",
            "data_dir": str(workdir / "data"),
            "upstream_timeout_secs": 3,
            "drain_timeout_secs": 10,
        }
        server.update(server_overrides)
        lines = ["[server]"] + [f"{k} = {json.dumps(v)}" for k, v in server.items()]
        lines += [
            "",
            "[providers.mock]",
            'kind = "openai"',
            f'base_url = "{mock.url}/v1"',
            'api_key = "sk-upstream-openai"',
            'models = ["gpt-*", "text-embedding-*"]',
            "",
            "[providers.mockant]",
            'kind = "anthropic"',
            f'base_url = "{mock.url}/v1"',
            'api_key = "sk-upstream-anthropic"',
            'models = ["claude-*"]',
        ]
        self.config_path = workdir / "tollgate.toml"
        self.config_path.write_text(
            "\n".join(lines) + "\n" + GATEWAY_EXTRA_CONFIG + "\n" + extra_config
        )
        out = workdir / "tollgate.out"
        self.proc = _spawn(
            [str(_binary("tollgate", "TOLLGATE_BIN")), "--config", str(self.config_path), "serve"],
            workdir,
            "tollgate",
            env,
        )
        try:
            m = _wait_for(
                out, re.compile(r"tollgate listening on (http://127\.0\.0\.1:(\d+))"), self.proc,
                "tollgate",
            )
            self.url = m.group(1)
            self.port = int(m.group(2))
            self.admin_key = _wait_for(out, ADMIN_KEY_RE, self.proc, "tollgate admin key").group(0)
            self.admin = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self.admin_key}"},
                timeout=HTTP_TIMEOUT,
            )
            self.account_id = self.create_account("e2e", grant_usd=GRANT_USD)
            issued = self.create_key("e2e-user")
            self.key = issued["key"]
            self.key_id = issued["id"]
        except BaseException:
            _stop(self.proc)
            raise

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def create_account(self, name: str, grant_usd: str | None = None) -> str:
        """Creates an account, funded with `grant_usd` of credits if given; returns its id."""
        r = self.admin.post("/admin/accounts", json={"name": name})
        assert r.status_code == 201, r.text
        account_id = r.json()["id"]
        if grant_usd is not None:
            g = self.admin.post(
                f"/admin/accounts/{account_id}/credits", json={"amount_usd": grant_usd}
            )
            assert g.status_code == 201, g.text
            assert g.json()["balance_nanos"] == usd_to_nanos(grant_usd)
        return account_id

    def create_key(self, name: str, account_id: str | None = None) -> dict:
        account_id = account_id or self.account_id
        r = self.admin.post(f"/admin/accounts/{account_id}/keys", json={"name": name})
        assert r.status_code == 201, r.text
        body = r.json()
        assert ADMIN_KEY_RE.fullmatch(body["key"]), body
        assert body["last4"] == body["key"][-4:]
        return body

    def revoke_key(self, key_id: str) -> dict:
        r = self.admin.delete(f"/admin/keys/{key_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def record_for(self, request_id: str, wait: float = 0.0):
        """The usage record of a request (None if there is none, after waiting up to `wait` s)."""
        assert request_id, "no request id"
        deadline = time.monotonic() + wait
        while True:
            r = self.admin.get(f"/admin/requests/{request_id}")
            if r.status_code == 200:
                return r.json()
            assert r.status_code == 404, r.text
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def records(self, **params) -> list:
        params.setdefault("limit", 10_000)
        r = self.admin.get("/admin/requests", params=params)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def record_count(self) -> int:
        return len(self.records())

    def stderr_tail(self, n: int = 4000) -> str:
        p = self.workdir / "tollgate.err"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def close(self) -> None:
        if hasattr(self, "admin"):
            self.admin.close()
        _stop(self.proc)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def mock(tmp_path_factory):
    m = Mock(tmp_path_factory.mktemp("mock"))
    yield m
    m.close()


@pytest.fixture(scope="session")
def start_gateway(mock, tmp_path_factory):
    started = []

    def start(extra_config: str = "", env: dict | None = None, **server_overrides) -> Gateway:
        g = Gateway(mock, tmp_path_factory.mktemp("gateway"), extra_config, env,
                    **server_overrides)
        started.append(g)
        return g

    yield start
    for g in started:
        g.close()


@pytest.fixture(scope="session")
def gateway(start_gateway) -> Gateway:
    return start_gateway()


@pytest.fixture
def ledger_for(mock):
    return mock.ledger_for


@pytest.fixture
def record_for(gateway):
    return gateway.record_for


@pytest.fixture
def reset(mock):
    return mock.reset


@pytest.fixture
def oai(gateway):
    import openai

    client = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=15)
    yield client
    client.close()


@pytest.fixture
def ant(gateway):
    import anthropic

    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=15)
    yield client
    client.close()
