"""The one rule for identifiers that reach Vault paths and headers: workspace ids and user ids (``sub``).

A workspace id names a KV path (``workspaces/<wid>/credentials/<cid>``), a transit context
(``workspace:<wid>|credential:<cid>``) and an audited header, so it is 1-255 characters of letters, digits and
``_ . : -``, starting with a letter or digit: no ``/``, no ``..`` segment, no ``|``, no space, no control or
non-ASCII character. The same rule holds wherever a workspace id enters: an API key's workspace
(``credctl api-key create``), each entry of a user token's workspaces claim, and ``X-Workspace-Id``.

A user id (a token's ``sub``) is sent to Vault in an audited header and stored as ``created_by``/``user_id``: 1-255
printable ASCII characters (no CR/LF or other control character, nothing outside Latin-1 that HTTP headers
cannot carry).
"""

from __future__ import annotations

import re

WORKSPACE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")
WORKSPACE_ID_RULE = "a workspace id is 1-255 characters of letters, digits and _ . : - (starting with one)"
USER_ID = re.compile(r"^[\x20-\x7e]{1,255}$")


def is_workspace_id(value: object) -> bool:
    return isinstance(value, str) and WORKSPACE_ID.fullmatch(value) is not None


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and USER_ID.fullmatch(value) is not None and value.strip() == value
