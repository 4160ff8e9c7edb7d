"""The gateway's own OpenAPI document, as a checker of real responses: which operation a request
hit, whether its status, content type and body are what the document says (JSON Schema 2020-12,
which OpenAPI 3.1 uses), and whether an error is in the caller's shape."""

from __future__ import annotations

import re

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:tollgate:openapi"
# A gateway on which every documented operation can succeed: webhooks may target loopback (the
# tests point them at a closed port, so nothing leaves the machine), and accounts may store
# their own provider keys (an encryption key).
GATEWAY_CONFIG = """
[webhooks]
allow_private_targets = true

[security]
encryption_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
"""
METHODS = ("get", "post", "put", "patch", "delete")


class Document:
    def __init__(self, doc: dict):
        self.doc = doc
        self.registry = Registry().with_resource(
            DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
        )
        # Literal paths before templated ones, so `/v1/messages/count_tokens` is not taken
        # for a parameter.
        self.templates = sorted(
            (
                (re.compile("^" + re.sub(r"\{[^}/]+\}", "[^/]+", p) + "$"), p)
                for p in doc["paths"]
            ),
            key=lambda t: t[1].count("{"),
        )

    def operations(self) -> set[tuple[str, str]]:
        return {
            (m.upper(), p) for p, item in self.doc["paths"].items() for m in item if m in METHODS
        }

    def template(self, method: str, path: str) -> str:
        for regex, template in self.templates:
            if regex.match(path) and method.lower() in self.doc["paths"][template]:
                return template
        raise AssertionError(f"{method} {path} is not in openapi.json")

    def resolve(self, node: dict) -> dict:
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.registry.resolver().lookup(DOC_URI + "#" + pointer).contents
        return node

    def validate(self, instance, pointer: str, what: str) -> None:
        """Validates against the schema at `pointer` (a JSON pointer into the document)."""
        schema = {"$ref": f"{DOC_URI}#{pointer}"}
        errors = list(Draft202012Validator(schema, registry=self.registry).iter_errors(instance))
        if errors:
            detail = "; ".join(
                f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}"
                for e in errors[:5]
            )
            raise AssertionError(f"{what}: body does not match the document: {detail}")

    def check(self, request: httpx.Request, resp: httpx.Response) -> tuple[str, str]:
        """Checks `resp` against the operation `request` hit; returns (method, template)."""
        method = request.method
        template = self.template(method, request.url.path)
        what = f"{method} {request.url.path} -> {resp.status_code}"
        responses = self.doc["paths"][template][method.lower()]["responses"]
        status = str(resp.status_code)
        key = status if status in responses else f"{status[0]}XX"
        assert key in responses, (
            f"{what}: status not documented (documented: {sorted(responses)}); body {resp.text[:300]}"
        )
        documented = self.resolve(responses[key])
        content = documented.get("content", {})
        media = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if not content:
            assert not resp.content, f"{what}: a body where the document has none"
            return method, template
        assert media in content, f"{what}: content type {media!r} not in {sorted(content)}"
        if media == "application/json" and "schema" in content[media]:
            escaped = template.replace("~", "~0").replace("/", "~1")
            pointer = f"/paths/{escaped}/{method.lower()}/responses/{key}"
            if "$ref" in responses[key]:
                pointer = responses[key]["$ref"].removeprefix("#")
            self.validate(resp.json(), f"{pointer}/content/application~1json/schema", what)
        if resp.status_code >= 400:
            self.check_error_shape(request, resp, what)
        return method, template

    def check_error_shape(self, request: httpx.Request, resp: httpx.Response, what: str) -> None:
        """OpenAI's shape for `Authorization: Bearer` callers, Anthropic's for `x-api-key` or
        `anthropic-version` ones (error.rs's rule)."""
        h = request.headers
        anthropic = (
            bool(h.get("x-api-key"))
            or "anthropic-version" in h
            or (
                request.url.path in ("/v1/messages", "/v1/messages/count_tokens")
                and "authorization" not in h
            )
        )
        shape = "AnthropicError" if anthropic else "OpenAIError"
        self.validate(resp.json(), f"/components/schemas/{shape}", f"{what} ({shape})")
