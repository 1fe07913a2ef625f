"""GitHub source (github.com and GitHub Enterprise Server): GraphQL for bulk, REST for config."""

from changeproof.sources.github.collector import GitHubSource, Options, RepoResult, graphql_url

__all__ = ["GitHubSource", "Options", "RepoResult", "graphql_url"]
