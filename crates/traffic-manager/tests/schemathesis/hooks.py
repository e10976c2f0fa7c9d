"""Checks of this project's own for schemathesis (loaded through SCHEMATHESIS_HOOKS).

`schema_valid_requests_are_accepted` stands in for schemathesis's
`positive_data_acceptance`, which is excluded from the run: it is the same check, with
the answers excused that depend on what the server holds or how it is configured,
or on a relation between fields that JSON Schema cannot state:

- 412 `stale-revision`: `If-Match` names a revision the route is not at. Which revision
  a route is at is state; the contract answers a stale precondition with 412.
- 422 `idempotency-key-reused`: the `Idempotency-Key` was used with another request
  within 24 hours. Which requests a key was used for is state; generated keys repeat
  across requests, and the contract answers such a reuse with 422.

- 422 `invalid-fields` on a new webhook's `url` alone, naming an internal address that
  `TM_WEBHOOK_ALLOW_NETWORKS` does not allow. Which networks are allowed is the
  server's configuration, and the run learns addresses such as a route's upstream
  (private, as upstreams are) from the answers and reuses them.

- 422 `invalid-fields` on a service policy, each error naming a relation between
  fields: a probe's `timeout_seconds` above its `interval_seconds`, a status range
  whose first status is above its last, a tier's `min_healthy` above the number of
  versions it names, a version named in two tiers.

Each is excused only with its own problem type (and the last two only for those
fields and reasons): any other 412 or 422 answer to a schema-valid request still
fails the run.

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


NETWORK_POLICY = "that TM_WEBHOOK_ALLOW_NETWORKS does not allow"

# What the server says when a policy breaks a relation between fields. A status range
# refusal reads the same for a malformed range, which the schema's pattern rules out:
# a schema-valid request gets it only for a range that runs backwards.
POLICY_RELATIONS = (
    "at most interval_seconds",
    "a status range is",
    "min_healthy must be from 1 to the number of versions it names",
    "is named twice in the failover chain",
)


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
        if refused_by_network_policy(case, response):
            return None
        if refused_for_a_relation(case, response):
            return None
        raise


def field_errors(case, response, method, path):
    """The field errors of a 422 `invalid-fields` answer to `method path`; [] otherwise."""
    if case.method.upper() != method or case.path != path:
        return []
    if response.status_code != 422:
        return []
    if problem_type(response) != PROBLEM + "invalid-fields":
        return []
    return response.json().get("errors") or []


def refused_by_network_policy(case, response):
    """A new webhook refused only because its URL names an internal address."""
    errors = field_errors(case, response, "POST", "/api/v1/webhooks")
    return bool(errors) and all(
        error.get("field") == "url" and error.get("message", "").endswith(NETWORK_POLICY)
        for error in errors
    )


def refused_for_a_relation(case, response):
    """A service policy refused only for relations between its fields."""
    errors = field_errors(case, response, "PUT", "/api/v1/services/policy")
    return bool(errors) and all(
        any(relation in error.get("message", "") for relation in POLICY_RELATIONS)
        for error in errors
    )
