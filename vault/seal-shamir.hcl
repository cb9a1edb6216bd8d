# The default seal of compose.yaml's OpenBao (OPENBAO_SEAL unset or shamir): no seal stanza, so OpenBao splits its
# root key into Shamir key shares at init, and vault/compose-init.sh unseals it with one after every start.
# OPENBAO_SEAL=static merges vault/seal-static.hcl instead (auto-unseal). Pick one before the first `up`: moving an
# initialised server to another seal is a seal migration (`bao operator unseal -migrate`), not a restart.
