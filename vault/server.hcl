# OpenBao server configuration for compose.yaml: a real server, not dev mode. State persists on a volume, the
# server starts sealed and uninitialised, and the `openbao-init` job (vault/compose-init.sh) initialises and
# unseals it. The paths are directories that the openbao/openbao image creates and owns as its `openbao` user,
# so named volumes mounted there are writable by the server without running it as root.

storage "raft" {
  # Integrated storage is what OpenBao recommends for production; a single node is enough for the demo.
  path    = "/openbao/file"
  node_id = "openbao-0"
}

listener "tcp" {
  address = "0.0.0.0:8200"
  # Demo only: plain HTTP on the compose network. Production sets tls_cert_file and tls_key_file here,
  # because the service sends tokens and secrets over this listener (the prod profile's vault/server-tls.hcl does).
  tls_disable = true
}

# How other containers reach this node: the compose service name.
api_addr     = "http://openbao:8200"
cluster_addr = "https://openbao:8201"

# The container runs without the IPC_LOCK capability, and mlock is discouraged with raft storage anyway
# (it would lock the memory-mapped database). Production also disables swap on the host.
disable_mlock = true

# Standbys forward every request to the active node instead of serving reads themselves. OpenBao 2.7.2's
# read-enabled standbys (the default) wrote no audit entry for the transit calls and KV reads they served (measured
# on the drills' cluster), and their reads may lag a write just made; the service needs both audited and fresh.
disable_standby_reads = true

# OpenBao refuses to enable audit devices through the API (unsafe_allow_api_audit_creation defaults to false
# since 2.3.2), so the device is declared here; it exists from the first request after unseal. The security
# team reads this file (on the openbao-audit volume) to trace every secret access to an API request.
audit "file" "file" {
  description = "every request and response, secret values HMAC'd"
  options {
    file_path = "/openbao/logs/audit.log"
    mode      = "0600"
  }
}
