# Security teams: read who owns what and whether a known value was touched, never a secret. Ownership is in KV
# metadata (custom_metadata: workspace, credential, creator, auth type) and in the audit log; a ciphertext is not
# readable here (no data/ path) and nothing can be decrypted (no transit encrypt/decrypt/rewrap).
# ${transit_mount}, ${transit_key}, ${kv_mount} and ${role} are filled in by `credctl vault-bootstrap`.

path "${kv_mount}/metadata/workspaces/*" { capabilities = ["read", "list"] }

# The key's configuration and versions (no key material: the key is not exportable).
path "${transit_mount}/keys/${transit_key}" { capabilities = ["read"] }

# "Was this value accessed?": HMAC a known value with an audit device's salt and search the log for it.
path "sys/audit-hash/*" { capabilities = ["update"] }
# Which audit devices exist and which request headers are audited (both endpoints need sudo to read).
path "sys/audit" { capabilities = ["read", "sudo"] }
path "sys/config/auditing/request-headers" { capabilities = ["read", "sudo"] }

# What the service may do, and how its AppRole is set (not its role id or secret ids).
path "sys/policies/acl/credentials-service" { capabilities = ["read"] }
path "auth/approle/role/${role}" { capabilities = ["read"] }
