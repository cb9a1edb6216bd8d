# The credentials service: encrypt, decrypt and rewrap with its one transit key, and manage the KV entries under
# the workspaces/ prefix of its own mount. No key administration, no export, no other mount, nothing under sys/.
# ${transit_mount}, ${transit_key} and ${kv_mount} are filled in by `credctl vault-bootstrap`.

path "${transit_mount}/encrypt/${transit_key}" {
  capabilities = ["update"]
}
path "${transit_mount}/decrypt/${transit_key}" {
  capabilities = ["update"]
}
path "${transit_mount}/rewrap/${transit_key}" {
  capabilities = ["update"]
}

path "${kv_mount}/data/workspaces/*" {
  capabilities = ["create", "read", "update"]
}
path "${kv_mount}/metadata/workspaces/*" {
  capabilities = ["read", "update", "delete", "list"]
}
path "${kv_mount}/metadata/workspaces" {
  capabilities = ["list"]
}
path "${kv_mount}/destroy/workspaces/*" {
  capabilities = ["update"]
}
