"""The published OpenAPI document, fuzzed: generated requests never get a 5xx.

Requests are generated from the document itself (parameters and JSON bodies per schema,
plus some wrongly typed values), sent to a real server with an admin token, and every
answer must be < 500. Bounded: a few examples per operation so CI stays fast.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import Server

JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30),
                 st.lists(st.integers(), max_size=3))  # fmt: skip


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = doc
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def strategy(doc: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    schema = _resolve(doc, schema)
    if "anyOf" in schema:
        return st.one_of([strategy(doc, s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    t = schema.get("type")
    if t == "string":
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 40), 40))  # fmt: skip
    if t == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    if t == "array":
        return st.lists(strategy(doc, schema.get("items", {})), max_size=3)
    if t == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: strategy(doc, v) for k, v in props.items() if k in required},
            optional={k: strategy(doc, v) for k, v in props.items() if k not in required},
        )
    return JUNK


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]


def request_strategy(doc: dict[str, Any]) -> st.SearchStrategy[tuple[str, str, Any, Any]]:
    def one(method: str, path: str, op: dict[str, Any]) -> st.SearchStrategy[Any]:
        params = op.get("parameters", [])
        path_params = {p["name"]: st.text(max_size=20) for p in params if p["in"] == "path"}
        query = {
            p["name"]: st.one_of(strategy(doc, p.get("schema", {})), JUNK)
            for p in params
            if p["in"] == "query"
        }
        body_schema = (
            op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        )
        body = st.one_of(strategy(doc, body_schema), JUNK) if body_schema is not None else st.none()
        return st.tuples(
            st.just(method),
            st.fixed_dictionaries(path_params).map(
                lambda pp: path.format(**{k: quote(v, safe="") for k, v in pp.items()})
            ),
            st.fixed_dictionaries({}, optional=query),
            body,
        )

    return st.one_of([one(m, p, op) for m, p, op in operations(doc)])


def test_fuzzed_requests_never_get_a_5xx(demo_server: Server) -> None:
    doc = httpx.get(f"{demo_server.url}/api/v1/openapi.json").json()
    assert len(operations(doc)) >= 12
    seen: set[tuple[str, str]] = set()
    client = demo_server.client("admin")

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(request_strategy(doc))
    def check(req: tuple[str, str, Any, Any]) -> None:
        method, path, query, body = req
        q = {k: v for k, v in query.items() if isinstance(v, str | int | bool)}
        r = client.request(method.upper(), path, params=q,
                           json=body if method == "post" else None)  # fmt: skip
        seen.add((method, path.split("?")[0]))
        assert r.status_code < 500, (method, path, q, body, r.status_code, r.text[:500])

    try:
        check()
    finally:
        client.close()
    assert len(seen) >= 10
