# Auto-unseal for compose.yaml's OpenBao (OPENBAO_SEAL=static): merged into vault/server.hcl by a second -config.
# OpenBao's static seal wraps the root key with a 32-byte AES-256-GCM key read from a file, so the server unseals
# itself at every start; init gives recovery keys instead of unseal keys (vault/compose-init.sh). The key is the
# compose secret openbao_seal_key (`just compose-secrets` writes secrets/openbao_seal_key: 32 random bytes).
#
# The key sits beside the server it unseals: this stops nobody who can read both, and protects the data on the
# volume only from whoever has the volume without the key. Production keeps the key elsewhere (a KMS, an HSM, a
# transit seal on another OpenBao) or stays with Shamir key shares split among holders.
seal "static" {
  # Name a new key when rotating: OpenBao then rewraps with current_key and still opens previous_key's data
  # (previous_key_id, previous_key).
  current_key_id = "compose-1"
  current_key    = "file:///run/secrets/openbao_seal_key"
}
