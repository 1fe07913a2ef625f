"""The GraphQL query the GitLab source sends: merged MRs into one branch, 50 per page, with
everything the controls need nested (one request instead of ~9 REST calls per MR)."""

from __future__ import annotations

MERGED_MRS = """
query MergedMergeRequests($fullPath: ID!, $branches: [String!], $after: String, $mergedAfter: Time, $first: Int!) {
  project(fullPath: $fullPath) {
    mergeRequests(state: merged, targetBranches: $branches, mergedAfter: $mergedAfter,
                  sort: MERGED_AT_ASC, first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes {
        iid title description webUrl createdAt mergedAt
        sourceBranch targetBranch squash
        mergeCommitSha squashCommitSha diffHeadSha
        author { username name bot }
        mergeUser { username name bot }
        labels(first: 50) { nodes { title } }
        approvedBy(first: 50) { nodes { username name bot } }
        commits(first: 100) {
          pageInfo { hasNextPage }
          nodes {
            sha message authorName authorEmail committerName committerEmail
            authoredDate committedDate author { username }
          }
        }
        diffStats { path additions deletions }
        diffStatsSummary { fileCount }
        headPipeline {
          iid sha status startedAt finishedAt
          jobs(first: 100) { nodes { name status startedAt finishedAt allowFailure } }
        }
        notes(first: 100) {
          pageInfo { hasNextPage }
          nodes { system body createdAt author { username name bot } }
        }
      }
    }
  }
}
"""
