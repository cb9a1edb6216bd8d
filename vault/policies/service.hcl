# The credentials service: encrypt, decrypt and rewrap with its one transit key, manage the KV entries of
# workspaces/<workspace>/credentials/<credential> on its own mount, and look up and renew its own token.
# Nothing else: no key administration (config, rotate, trim, export, backup, delete, soft-delete), no other KV path
# or mount, nothing under sys/ but sys/capabilities-self (for /health/ready). The AppRole role sets token_no_default_policy, so this is the whole grant.
# ${transit_mount}, ${transit_key} and ${kv_mount} are filled in by `credctl vault-bootstrap`.

path "${transit_mount}/encrypt/${transit_key}" { capabilities = ["update"] }
path "${transit_mount}/decrypt/${transit_key}" { capabilities = ["update"] }
path "${transit_mount}/rewrap/${transit_key}" { capabilities = ["update"] }
# Fingerprints of Idempotency-Key requests (a keyed hash; no key material leaves Vault).
path "${transit_mount}/hmac/${transit_key}" { capabilities = ["update"] }

# One entry per credential. `+` matches one path segment, so nothing deeper or beside it is reachable.
path "${kv_mount}/data/workspaces/+/credentials/+" { capabilities = ["create", "read", "update"] }
# Ownership (custom_metadata) is written before the first version exists, hence create.
path "${kv_mount}/metadata/workspaces/+/credentials/+" { capabilities = ["create", "read", "update", "delete"] }
path "${kv_mount}/destroy/workspaces/+/credentials/+" { capabilities = ["update"] }
# Listing, for `credctl reconcile`'s orphan sweep.
path "${kv_mount}/metadata/workspaces/" { capabilities = ["list"] }
path "${kv_mount}/metadata/workspaces/+/credentials/" { capabilities = ["list"] }

# Its own token only (the default policy is not attached).
path "auth/token/lookup-self" { capabilities = ["read"] }
# /health/ready asks which of the paths above this token may use (POST only; the default policy is not attached).
path "sys/capabilities-self" { capabilities = ["update"] }
path "auth/token/renew-self" { capabilities = ["update"] }
