"""Every GraphQL query the GitHub source can send is valid against GitHub's published schema."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from changeproof.sources.github import queries

SCHEMA = (
    Path(__file__).resolve().parents[3].parent
    / "shared/corpus/external/octokit-graphql-schema/schema.graphql"
)


@cache
def schema() -> Any:
    graphql = pytest.importorskip("graphql")
    if not SCHEMA.exists():
        pytest.skip(f"GitHub's schema is not at {SCHEMA}")
    doc = graphql.parse(SCHEMA.read_text())
    built = graphql.build_ast_schema(doc, assume_valid_sdl=True)
    # GitHub's own SDL breaks two spec rules (duplicate enterprise fields; deprecated interface
    # implementations); queries are still checked field by field, argument by argument.
    built._validation_errors = []
    return built


def errors(query: str) -> list[str]:
    import graphql

    return [e.message for e in graphql.validate(schema(), graphql.parse(query))]


@pytest.mark.parametrize("query", queries.all_queries(), ids=lambda q: q.split("(")[0].split()[-1])
def test_query_is_valid_against_github_schema(query: str) -> None:
    assert errors(query) == []


def test_the_validator_catches_mistakes() -> None:
    bad = queries.PROBE.replace("isArchived", "isArchivedd")
    assert any("isArchivedd" in e for e in errors(bad))
    wrong_arg = queries.MERGED_PRS.replace("states: MERGED", "states: MERGEDD")
    assert errors(wrong_arg)


def test_every_operation_is_listed() -> None:
    names = {q.split("(")[0].split("{")[0].split()[-1] for q in queries.all_queries()}
    assert names == {
        "Probe", "MergedPullRequests", "Deployments", "FirstParentHistory", "PullRequestOverflow",
    }  # fmt: skip
