# OpenBao server configuration for the extra raft nodes of compose.yaml's `ha` profile (openbao-2, openbao-3).
# The first node (`openbao`, vault/server.hcl) is initialised by openbao-init; these join it through retry_join,
# and openbao-ha-unseal unseals them with the same key. Each node's identity comes from its environment:
# BAO_RAFT_NODE_ID, BAO_API_ADDR and BAO_CLUSTER_ADDR.

storage "raft" {
  path = "/openbao/file"
  # Every node, so a node that restarts finds the cluster through whichever node is up.
  retry_join { leader_api_addr = "http://openbao:8200" }
  retry_join { leader_api_addr = "http://openbao-2:8200" }
  retry_join { leader_api_addr = "http://openbao-3:8200" }
}

listener "tcp" {
  address = "0.0.0.0:8200"
  # Demo only, as in vault/server.hcl: production sets tls_cert_file and tls_key_file.
  tls_disable = true
}

disable_mlock = true

# Standbys forward every request to the active node instead of serving reads themselves. OpenBao 2.7.2's
# read-enabled standbys (the default) wrote no audit entry for the transit calls and KV reads they served (measured
# on the drills' cluster), and their reads may lag a write just made; the service needs both audited and fresh.
disable_standby_reads = true

# Exactly vault/server.hcl's device: OpenBao refuses to unseal a node whose declared audit devices differ from the
# cluster's.
audit "file" "file" {
  description = "every request and response, secret values HMAC'd"
  options {
    file_path = "/openbao/logs/audit.log"
    mode      = "0600"
  }
}
