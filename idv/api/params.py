"""What the API's routes share: the app's runtime and its services as dependencies (never a
closure over them), the path parameters with the vocabulary's rules, the answers each kind
of route may give, and the permission a route names (`x-permission` in the OpenAPI
document: the one its service checks; `authenticated` for any bearer token, `public` for a
page a browser follows)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParam

from idv.deps import Rt, Svc, needs, runtime_of, services_of  # noqa: F401 - shared by the routes
from policies.vocabulary import ApplicantRef

# A subject in a path: the vocabulary's rule, refused with 422 naming `applicant_ref`.
SubjectRef = Annotated[ApplicantRef, PathParam(description="The caller's key for the applicant")]
RequestIdPath = Annotated[
    str,
    PathParam(
        min_length=36,
        max_length=36,
        pattern=r"^[0-9a-f-]{36}$",
        description="A subject request's id",
    ),
]
# Every route behind the bearer token may answer 401, and 422 for a field that breaks a rule;
# one that reads a body, 400 for a body that is not JSON and 413 for one too large.
GUARDED = (401, 422)
READS_BODY = (400, 401, 413, 422)
