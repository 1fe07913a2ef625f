"""Every GraphQL query the GitHub source sends. ``all_queries()`` lists them for the schema test.

Cost model (GitHub: sum of connection requests / 100, minimum 1): a page of 50 merged PRs asks
for ~8 nested connections per PR → 1 + 8×50 = 401 requests → 5 points. Nested connections inside
nested lists multiply, so commit co-authors come from ``Co-authored-by`` trailers in the message
rather than ``authors(first:)`` (which would cost 50×50 per page).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

RATE = "rateLimit { cost remaining resetAt }"

ACTOR = "__typename login"
GIT_ACTOR = "name email date user { login }"
SIGNATURE = "signature { state isValid wasSignedByGitHub signer { login } }"
COMMIT = f"""oid message committedDate authoredDate
  author {{ {GIT_ACTOR} }} committer {{ {GIT_ACTOR} }} {SIGNATURE}"""

CONTEXT = """__typename
  ... on CheckRun { name conclusion status startedAt completedAt detailsUrl databaseId
    checkSuite { app { slug databaseId } workflowRun { databaseId runNumber event url createdAt
      workflow { name } } } }
  ... on StatusContext { context state createdAt targetUrl creator { login } }"""

REVIEW = f"id state submittedAt url authorAssociation author {{ {ACTOR} }} commit {{ oid }}"

TIMELINE_TYPES = (
    "HEAD_REF_FORCE_PUSHED_EVENT",
    "REVIEW_DISMISSED_EVENT",
    "ADDED_TO_MERGE_QUEUE_EVENT",
    "REMOVED_FROM_MERGE_QUEUE_EVENT",
    "MERGED_EVENT",
    "BASE_REF_CHANGED_EVENT",
    "READY_FOR_REVIEW_EVENT",
)
TIMELINE = f"""__typename
  ... on HeadRefForcePushedEvent {{ createdAt actor {{ {ACTOR} }}
    beforeCommit {{ oid }} afterCommit {{ oid }} }}
  ... on ReviewDismissedEvent {{ createdAt actor {{ {ACTOR} }} dismissalMessage
    previousReviewState review {{ id }} }}
  ... on AddedToMergeQueueEvent {{ createdAt actor {{ {ACTOR} }} }}
  ... on RemovedFromMergeQueueEvent {{ createdAt actor {{ {ACTOR} }} reason }}
  ... on MergedEvent {{ createdAt actor {{ {ACTOR} }} commit {{ oid }} }}
  ... on BaseRefChangedEvent {{ createdAt actor {{ {ACTOR} }} previousRefName currentRefName }}
  ... on ReadyForReviewEvent {{ createdAt actor {{ {ACTOR} }} }}"""

FILE = "path changeType additions deletions"
PAGE = "pageInfo { hasNextPage endCursor }"

PULL_REQUEST = f"""id number title body url createdAt updatedAt mergedAt
  baseRefName headRefName headRefOid isCrossRepository changedFiles
  author {{ {ACTOR} }} mergedBy {{ {ACTOR} }}
  mergeCommit {{ oid message committedDate parents(first: 2) {{ nodes {{ oid }} }}
    statusCheckRollup {{ contexts(first: $contexts) {{ nodes {{ {CONTEXT} }} }} }} }}
  labels(first: 20) {{ nodes {{ name }} }}
  reviews(first: $reviews) {{ {PAGE} nodes {{ {REVIEW} }} }}
  timelineItems(first: $timeline, itemTypes: [{", ".join(TIMELINE_TYPES)}]) {{
    {PAGE} nodes {{ {TIMELINE} }} }}
  commits(first: $commits) {{ totalCount {PAGE} nodes {{ commit {{ {COMMIT} }} }} }}
  statusCheckRollup {{ contexts(first: $contexts) {{ {PAGE} nodes {{ {CONTEXT} }} }} }}
  files(first: $files) {{ {PAGE} nodes {{ {FILE} }} }}"""

# What a probe reads of one repository. Rulesets come with their source, so organisation (and
# enterprise) rulesets shared by many repositories are read once per run, and their ids, so the
# REST list of rulesets is not needed.
PROBE_REPO = f"""nameWithOwner isArchived
    owner {{ __typename login }}
    defaultBranchRef {{ name target {{ oid }} }}
    refs(refPrefix: "refs/heads/", first: 100) {{ {PAGE} nodes {{ name target {{ oid }} }} }}
    pullRequests(states: MERGED, first: 1, orderBy: {{field: UPDATED_AT, direction: DESC}}) {{
      totalCount nodes {{ updatedAt }} }}
    deployments(first: 1, orderBy: {{field: CREATED_AT, direction: DESC}}) {{
      totalCount nodes {{ databaseId updatedAt latestStatus {{ state }} }} }}
    rulesets(first: 50, includeParents: true) {{ {PAGE} nodes {{ databaseId updatedAt enforcement
      source {{ __typename ... on Organization {{ login }} ... on Enterprise {{ slug }}
        ... on Repository {{ nameWithOwner }} }} }} }}
    branchProtectionRules(first: 50) {{ nodes {{ pattern requiresApprovingReviews
      requiredApprovingReviewCount dismissesStaleReviews requireLastPushApproval
      requiresCodeOwnerReviews requiresStatusChecks requiresStrictStatusChecks
      requiredStatusCheckContexts isAdminEnforced allowsForcePushes allowsDeletions }} }}
    environments(first: 50) {{ nodes {{ name }} }}"""

PROBE_BATCH = 25  # repositories per probe request (≈6 connections each: well under 1 point)


def probe_query(repos: Sequence[tuple[str, str]]) -> str:
    """One request probing several repositories: alias ``r<i>`` for ``repos[i]`` (owner, name).
    A repository that does not exist comes back ``null`` with a NOT_FOUND error whose path is
    its alias; the others still answer."""
    lit = json.dumps
    body = "\n  ".join(
        f"r{i}: repository(owner: {lit(o)}, name: {lit(n)}) {{ ...ProbeRepo }}"
        for i, (o, n) in enumerate(repos)
    )
    return (
        f"query Probe {{\n  {RATE}\n  {body}\n}}\n"
        f"fragment ProbeRepo on Repository {{\n    {PROBE_REPO}\n}}"
    )


PROBE = probe_query([("octo-org", "api")])

DEPLOYMENT = f"""databaseId environment commitOid createdAt updatedAt state
  creator {{ {ACTOR} }}
  statuses(first: 10) {{ nodes {{ state createdAt logUrl environmentUrl creator {{ {ACTOR} }} }} }}"""

DEPLOYMENTS = f"""query Deployments($owner: String!, $name: String!, $first: Int!, $after: String) {{
  {RATE}
  repository(owner: $owner, name: $name) {{
    deployments(first: $first, after: $after, orderBy: {{field: CREATED_AT, direction: ASC}}) {{
      {PAGE}
      nodes {{ {DEPLOYMENT} }}
    }}
  }}
}}"""

FIRST_PARENT = f"""oid committedDate authoredDate message
  author {{ {GIT_ACTOR} }} committer {{ {GIT_ACTOR} }} {SIGNATURE}
  parents(first: 2) {{ nodes {{ oid }} }}
  associatedPullRequests(first: 5) {{ nodes {{ number baseRefName mergedAt
    mergeCommit {{ oid }} }} }}"""


def _history_aliases(tip: str, start: int, count: int) -> list[str]:
    lit = json.dumps
    return [
        f"c{i}: object(expression: {lit(f'{tip}~{start + i}')}) {{ ... on Commit {{ ...FP }} }}"
        for i in range(count)
    ]


def history_query(tip: str, start: int, count: int) -> str:
    """First-parent commits tip~start … tip~(start+count-1), one alias each (``~`` follows
    first parents only), with their associated PRs for attribution."""
    body = "\n    ".join(_history_aliases(tip, start, count))
    return (
        f"query FirstParentHistory($owner: String!, $name: String!) {{\n  {RATE}\n"
        f"  repository(owner: $owner, name: $name) {{\n    {body}\n  }}\n}}\n"
        f"fragment FP on Commit {{ {FIRST_PARENT} }}"
    )


# Overflow: one request follows every connection of a page that had more nodes than asked for.
OVERFLOW_FIELDS = {
    "reviews": f"reviews(first: 100, after: %s) {{ {PAGE} nodes {{ {REVIEW} }} }}",
    "timelineItems": (
        f"timelineItems(first: 100, after: %s, itemTypes: [{', '.join(TIMELINE_TYPES)}]) "
        f"{{ {PAGE} nodes {{ {TIMELINE} }} }}"
    ),
    "commits": f"commits(first: 100, after: %s) {{ {PAGE} nodes {{ commit {{ {COMMIT} }} }} }}",
    "files": f"files(first: 100, after: %s) {{ {PAGE} nodes {{ {FILE} }} }}",
    "statusCheckRollup": (
        f"statusCheckRollup {{ contexts(first: 100, after: %s) {{ {PAGE} "
        f"nodes {{ {CONTEXT} }} }} }}"
    ),
}


def _overflow_aliases(requests: Sequence[tuple[str, str, str]]) -> list[str]:
    parts = []
    for i, (node_id, conn, after) in enumerate(requests):
        sel = OVERFLOW_FIELDS[conn] % json.dumps(after)
        parts.append(f"o{i}: node(id: {json.dumps(node_id)}) {{ ... on PullRequest {{ {sel} }} }}")
    return parts


def overflow_query(requests: Sequence[tuple[str, str, str]]) -> str:
    """``requests``: (pull request node id, connection name, after cursor) triples."""
    return (
        "query PullRequestOverflow {\n  " + RATE + "\n  "
        + "\n  ".join(_overflow_aliases(requests)) + "\n}"
    )  # fmt: skip


def merged_prs_query(
    history: tuple[str, int, int] | None = None,
    overflow: Sequence[tuple[str, str, str]] = (),
    deployments: bool = False,
) -> str:
    """A page of merged PRs; optionally carrying the next stretch of first-parent history
    (``history`` = (tip, start, count)), the previous page's overflow follow-ups and the next
    page of deployments (``$depFirst``, ``$depAfter``), so none of them costs a request of its
    own while PR pages remain."""
    hist = "\n    ".join(_history_aliases(*history)) if history else ""
    if deployments:
        hist += (
            "\n    dep: deployments(first: $depFirst, after: $depAfter, "
            f"orderBy: {{field: CREATED_AT, direction: ASC}}) {{ {PAGE} nodes {{ {DEPLOYMENT} }} }}"
        )
    dep_vars = ", $depFirst: Int!, $depAfter: String" if deployments else ""
    ovf = "\n  ".join(_overflow_aliases(overflow))
    frag = f"\nfragment FP on Commit {{ {FIRST_PARENT} }}" if history else ""
    return f"""query MergedPullRequests($owner: String!, $name: String!, $base: String!,
    $first: Int!, $after: String, $reviews: Int!, $timeline: Int!, $commits: Int!,
    $files: Int!, $contexts: Int!{dep_vars}) {{
  {RATE}
  repository(owner: $owner, name: $name) {{
    pullRequests(states: MERGED, baseRefName: $base, first: $first, after: $after,
        orderBy: {{field: UPDATED_AT, direction: ASC}}) {{
      {PAGE}
      nodes {{ {PULL_REQUEST} }}
    }}
    {hist}
  }}
  {ovf}
}}{frag}"""


MERGED_PRS = merged_prs_query()


def all_queries() -> list[str]:
    """Every query shape the source can send (alias queries with representative arguments)."""
    sample = "0123456789abcdef0123456789abcdef01234567"
    return [
        PROBE,
        probe_query([("octo-org", "api"), ("octo-org", "web"), ("octocat", "Hello-World")]),
        MERGED_PRS,
        DEPLOYMENTS,
        history_query(sample, 0, 1),
        history_query(sample, 100, 100),
        overflow_query([("PR_x", name, "Y3Vyc29yOjUw") for name in OVERFLOW_FIELDS]),
        merged_prs_query(
            (sample, 0, 100), [("PR_x", name, "Y3Vyc29yOjUw") for name in OVERFLOW_FIELDS]
        ),
        merged_prs_query(None, [("PR_x", "files", "Y3Vyc29yOjUw")], deployments=True),
        # a page of 100 PRs carries 200 commits of history
        merged_prs_query((sample, 200, 200), (), deployments=True),
    ]
