"""Checks of this project's own for schemathesis (loaded through SCHEMATHESIS_HOOKS).

`schema_valid_requests_are_accepted` stands in for schemathesis's
`positive_data_acceptance`, which is excluded from the run: it is the same check, with
two answers excused that depend on what the server holds rather than on the request's
form, so that no schema can foretell them:

- 412 `stale-revision`: `If-Match` names a revision the route is not at. Which revision
  a route is at is state; the contract answers a stale precondition with 412.
- 422 `idempotency-key-reused`: the `Idempotency-Key` was used with another request
  within 24 hours. Which requests a key was used for is state; generated keys repeat
  across requests, and the contract answers such a reuse with 422.

Each is excused only with its own problem type: any other 412 or 422 answer to a
schema-valid request still fails the run.

The check is reached through schemathesis's own modules, as of the version the test
command installs (4.32.5).
"""

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

PROBLEM = "urn:traffic-manager:problem:"

STATEFUL_ANSWERS = {
    412: PROBLEM + "stale-revision",
    422: PROBLEM + "idempotency-key-reused",
}


def problem_type(response):
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("type") if isinstance(body, dict) else None


@schemathesis.check
def schema_valid_requests_are_accepted(ctx, response, case):
    """positive_data_acceptance, but for the answers that depend on state (see above)."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        expected = STATEFUL_ANSWERS.get(response.status_code)
        if expected is not None and problem_type(response) == expected:
            return None
        raise
