#!/bin/sh
# compose.yaml's `ha` profile: unseal the raft nodes that join the first one (JOIN_ADDRS, space-separated) with the
# key openbao-init keeps in INIT_KEYS_DIR/init.json. A joining node asks its retry_join leaders for the raft
# challenge and answers it once unsealed; the job exits 0 when every node is unsealed. With an auto-unseal seal
# (OPENBAO_SEAL=static) init.json holds recovery keys only, and the nodes unseal themselves: the job only waits.
set -eu

keys_dir=${INIT_KEYS_DIR:?set INIT_KEYS_DIR}
addrs=${JOIN_ADDRS:?set JOIN_ADDRS}
timeout=${INIT_TIMEOUT:-120}
init_json=$keys_dir/init.json
unset BAO_TOKEN VAULT_TOKEN

log() { printf 'compose-join: %s\n' "$*" >&2; }

[ -s "$init_json" ] || { log "$init_json is missing: openbao-init must run first"; exit 1; }
unseal_key=$(tr -d ' \t\r\n' <"$init_json" | sed -n 's/.*"unseal_keys_b64":\[*"\([^"]*\)".*/\1/p')
recovery_key=$(tr -d ' \t\r\n' <"$init_json" | sed -n 's/.*"recovery_keys_b64":\[*"\([^"]*\)".*/\1/p')
[ -n "$unseal_key" ] || [ -n "$recovery_key" ] || { log "$init_json has no unseal key"; exit 1; }

for addr in $addrs; do
    waited=0
    # `status` exits 0 once unsealed; until then, (re)send the key: the first attempts may come before the join.
    until bao status -address="$addr" >/dev/null 2>&1; do
        [ -z "$unseal_key" ] || bao operator unseal -address="$addr" "$unseal_key" >/dev/null 2>&1 || true
        waited=$((waited + 1))
        [ "$waited" -lt "$timeout" ] || { log "gave up after ${timeout}s unsealing $addr"; exit 1; }
        sleep 1
    done
    log "$addr is unsealed and in the raft cluster"
done
