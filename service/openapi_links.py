"""OpenAPI links from a created credential to the operations on it (get, update, reveal, versions, delete).

Clients generated from the document, and schemathesis' stateful tests, follow them: ``id`` of the create's answer
is the ``credential_id`` of each linked operation.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import Link, OpenAPIResponse

CREATE = ("/api/v1/credentials", "post")
FOLLOWED_BY = {
    "GetCredential": "get_credential_api_v1_credentials__credential_id__get",
    "UpdateCredential": "update_credential_api_v1_credentials__credential_id__put",
    "RevealCredential": "reveal_credential_api_v1_credentials__credential_id__reveal_post",
    "ListCredentialVersions": "list_versions",
    "DeleteCredential": "delete_credential_api_v1_credentials__credential_id__delete",
}


def link_created_credential(app: Litestar) -> None:
    """Add the links to the create operation's 200 response."""
    path, method = CREATE
    operation = getattr((app.openapi_schema.paths or {})[path], method)
    success = operation.responses["200"]
    assert isinstance(success, OpenAPIResponse)
    success.links = {
        name: Link(operation_id=target, parameters={"credential_id": "$response.body#/id"})
        for name, target in FOLLOWED_BY.items()
    }
