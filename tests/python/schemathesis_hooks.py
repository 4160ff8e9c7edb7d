"""schemathesis hooks for test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

- A generated webhook URL could name any host on the internet, and the gateway would try to
  deliver events there: every string URL is pointed at a closed loopback port instead (the
  gateway under test allows private targets), so deliveries fail at once and nothing leaves the
  machine. A URL of the wrong type is left alone, to still test the 400.
- The fuzzer learns ids from answers (an account's keys, the accounts) and would revoke, limit
  or disable the very key and account it authenticates with, leaving the rest of the run 401s.
  Those ids (SCHEMATHESIS_PROTECTED_IDS, comma-separated) are swapped for one that names
  nothing, which still tests the 404.
"""

import os

import schemathesis

HOOK_URL = "http://127.0.0.1:9/fuzzed"
WEBHOOK_BODIES = {("POST", "/v1/webhooks"), ("PATCH", "/v1/webhooks/{id}")}
PROTECTED = set(filter(None, os.environ.get("SCHEMATHESIS_PROTECTED_IDS", "").split(",")))
CHANGES = {
    ("DELETE", "/admin/keys/{id}"),
    ("PATCH", "/admin/keys/{id}"),
    ("PATCH", "/admin/accounts/{id}"),
}


@schemathesis.hook
def before_call(context, case, kwargs):
    op = (case.operation.method.upper(), case.operation.path)
    if op in WEBHOOK_BODIES and isinstance(case.body, dict) and isinstance(
        case.body.get("url"), str
    ):
        case.body["url"] = HOOK_URL
    if op in CHANGES and case.path_parameters and case.path_parameters.get("id") in PROTECTED:
        case.path_parameters["id"] = "protected_0000"
