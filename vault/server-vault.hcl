# HashiCorp Vault server configuration for compose.yaml's `vault` profile: the same role as vault/server.hcl
# (a real server, not dev mode, initialised and unsealed by vault/compose-init.sh), on Vault's own image paths.
#
# No audit stanza: Vault does not read audit devices from its config file. The `vault-init` job enables the
# file device through the API instead (still allowed on Vault, unlike OpenBao), writing /vault/logs/audit.log.

storage "raft" {
  path    = "/vault/file"
  node_id = "vault-0"
}

listener "tcp" {
  address = "0.0.0.0:8200"
  # Demo only: plain HTTP on the compose network; production sets tls_cert_file and tls_key_file.
  tls_disable = true
}

api_addr     = "http://vault:8200"
cluster_addr = "https://vault:8201"

# No IPC_LOCK capability in the container, and mlock is discouraged with raft storage.
disable_mlock = true
