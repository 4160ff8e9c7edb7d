"""schemathesis against a gateway of its own, driven by the gateway's /openapi.json: examples,
coverage and fuzzing phases over every operation, with an admin key, a user key in
`Authorization: Bearer` and the same key in `x-api-key`, bounded in examples and time. It must
find no server error (5xx), no undocumented status, no undocumented content type and no body
that breaks the document's schema.

The gateway is this test's alone (the fuzzer creates accounts, keys and webhooks, and revokes
what it can reach); its providers are the mock upstream, never a real one. Webhook URLs are
pointed at a closed loopback port, and the keys and accounts it authenticates with are kept
from being revoked, limited or disabled (schemathesis_hooks.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openapi_doc import GATEWAY_CONFIG

HERE = Path(__file__).resolve().parent
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
])
# Examples per operation, and a bound on each run: three runs over 56 operations take about
# 40 s each on a two-core machine, about two minutes together. A fixed seed makes CI
# repeatable; SCHEMATHESIS_SEED / SCHEMATHESIS_MAX_EXAMPLES explore further by hand.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "13")
RUN_TIMEOUT = 120


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(GATEWAY_CONFIG)


def protected_ids(gw) -> str:
    """The accounts and keys there before the fuzzer came (its own among them), which it must
    not revoke, limit or disable."""
    ids = set()
    for account in gw.admin.get("/admin/accounts").json()["data"]:
        ids.add(account["id"])
        keys = gw.admin.get(f"/admin/accounts/{account['id']}/keys").json()["data"]
        ids.update(k["id"] for k in keys)
    return ",".join(sorted(ids))


def schemathesis(gw, header: str, report: Path) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [
        str(cli), "run", f"{gw.url}/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", SEED,
        "--generation-database", "none",
        "--generation-with-security-parameters", "false",
        "--suppress-health-check", "all",
        "--request-timeout", "20",
        "--workers", "2",
        "--no-color",
        "--report", "junit", "--report-junit-path", str(report),
        "-H", header,
    ]
    env = os.environ | {
        "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py"),
        "SCHEMATHESIS_PROTECTED_IDS": protected_ids(gw),
    }
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env, cwd=report.parent
    )


# Each credential once: an admin key reaches every operation; a user key meets the 403s and
# its own account's scope; `x-api-key` gets errors in Anthropic's shape.
CREDENTIALS = {
    "admin-bearer": lambda gw: f"Authorization: Bearer {gw.admin_key}",
    "user-bearer": lambda gw: f"Authorization: Bearer {gw.key}",
    "user-x-api-key": lambda gw: f"x-api-key: {gw.key}",
}


@pytest.mark.parametrize("who", list(CREDENTIALS))
def test_schemathesis_finds_nothing(gw, who, tmp_path):
    started = time.monotonic()
    run = schemathesis(gw, CREDENTIALS[who](gw), tmp_path / "junit.xml")
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    print(f"schemathesis as {who}: {took:.0f} s\n{out[-2500:]}")
    assert run.returncode == 0, f"schemathesis as {who} found problems:\n{out[-20000:]}"
    # It ran every operation: a schema it could not load, or one it filtered, would test fewer.
    # (It leaves out the document's own route, /openapi.json.)
    documented = sum(len(item) for item in gw.admin.get("/openapi.json").json()["paths"].values())
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert selected and tested, out[-3000:]
    assert int(tested.group(1)) == int(selected.group(2)) >= documented - 1, out[-3000:]
    # The gateway is still serving after it, to the keys it fuzzed with.
    assert gw.admin.get("/health").status_code == 200
    assert gw.admin.get("/admin/accounts").status_code == 200
    r = gw.admin.get("/v1/usage", headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
