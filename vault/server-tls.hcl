# OpenBao server configuration for compose.yaml's `prod` profile (the `openbao-tls` service): vault/server.hcl with
# TLS on the listener, so the service's tokens and secrets never cross the compose network in clear text. The
# certificate and key are made by devtools/make-certs.sh (`just compose-certs`) and installed on the openbao-tls
# volume, readable by the server's user only, by the `openbao-tls-certs` job.

storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-tls-0"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  tls_cert_file   = "/openbao/tls/server.pem"
  tls_key_file    = "/openbao/tls/server-key.pem"
  tls_min_version = "tls12"
}

# How other containers reach this node: the compose service name, one of the certificate's names.
api_addr     = "https://openbao-tls:8200"
cluster_addr = "https://openbao-tls:8201"

# As in vault/server.hcl: no IPC_LOCK capability in the container, and mlock is discouraged with raft storage.
disable_mlock = true

# As in vault/server.hcl: OpenBao refuses API-created audit devices, so the file device is declared here.
audit "file" "file" {
  description = "every request and response, secret values HMAC'd"
  options {
    file_path = "/openbao/logs/audit.log"
    mode      = "0600"
  }
}
