#!/bin/sh
# compose.yaml's one-shot init job: initialise OpenBao (or Vault) on its first start, unseal it on every start,
# check that its file audit device is on, and leave the operator token where the bootstrap job reads it. Safe to
# re-run: `docker compose up` runs it again after a restart left the server sealed.
#
# DEMO ONLY. One key share with a threshold of one, kept on a volume beside the server it unseals, protects
# nothing from whoever can read that volume, and the root token stays on a volume for the bootstrap job. (The
# service never sees it: it logs in with AppRole, from the role_id and secret_id files the bootstrap job writes.)
# Production splits the unseal key among several holders (or auto-unseals with a KMS or HSM seal) and revokes the
# root token once the bootstrap has run.
#
# POSIX sh: the OpenBao and Vault images are Alpine, where sh is busybox. Settings (compose.yaml sets them):
#   INIT_CLI             bao (the OpenBao image) or vault (HashiCorp's image); default bao
#   INIT_ADDR            the server, e.g. http://openbao:8200
#   INIT_KEYS_DIR        where init.json (unseal key and root token) is kept; only the init job mounts it
#   INIT_TOKEN_FILE      where the operator token is written for the bootstrap job
#   INIT_TOKEN_OWNER     uid:gid given the token file (the bootstrap job's user); empty leaves it as is
#   INIT_API_AUDIT_FILE  Vault only: enable the file audit device at this path through the API. OpenBao refuses
#                        that and declares the device in vault/server.hcl instead.
#   INIT_TIMEOUT         seconds to wait for the server at each step; default 60
#   INIT_CACERT          with an https INIT_ADDR: the PEM CA the server's certificate must chain to (the `prod` profile)
set -eu

cli=${INIT_CLI:-bao}
addr=${INIT_ADDR:?set INIT_ADDR, e.g. http://openbao:8200}
keys_dir=${INIT_KEYS_DIR:?set INIT_KEYS_DIR}
token_file=${INIT_TOKEN_FILE:?set INIT_TOKEN_FILE}
token_owner=${INIT_TOKEN_OWNER:-}
api_audit_file=${INIT_API_AUDIT_FILE:-}
timeout=${INIT_TIMEOUT:-60}
cacert=${INIT_CACERT:-}
init_json=$keys_dir/init.json

# Both CLIs read VAULT_ADDR; bao prefers BAO_ADDR. Tokens are passed per command (as_root) and never stored in
# ~/.vault-token; a token inherited from the environment would be the wrong one.
export BAO_ADDR="$addr" VAULT_ADDR="$addr"
# Both CLIs check an https server's certificate against this CA (bao reads BAO_CACERT, vault VAULT_CACERT).
[ -z "$cacert" ] || export BAO_CACERT="$cacert" VAULT_CACERT="$cacert"
unset BAO_TOKEN VAULT_TOKEN
# Everything written here is a secret: readable by this job's user only, unless chmod'ed below.
umask 077

log() { printf 'compose-init: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# wait_for WHAT COMMAND...: retry COMMAND once a second until it succeeds or INIT_TIMEOUT runs out.
wait_for() {
    what=$1
    shift
    waited=0
    until "$@"; do
        waited=$((waited + 1))
        [ "$waited" -lt "$timeout" ] || die "gave up after ${timeout}s waiting for $what at $addr"
        sleep 1
    done
}

# `status` exits 0 when unsealed, 2 when sealed (or uninitialised), 1 when the server cannot be asked.
status_code() {
    code=0
    "$cli" status >/dev/null 2>&1 || code=$?
    echo "$code"
}
reachable() { [ "$(status_code)" -ne 1 ]; }
# sys/health answers 200 only once the node is initialised, unsealed and active (raft has elected it leader);
# before that, the first write of the bootstrap job could fail. wget is busybox's, in both images; busybox's wget
# cannot be given a CA, so over https the CLI asks instead (it fails on any answer but 200, and checks the certificate).
active() {
    case $addr in
    https://*) "$cli" read sys/health >/dev/null 2>&1 ;;
    *) wget -q -O /dev/null "$addr/v1/sys/health" ;;
    esac
}

# field NAME: the first string value of NAME in init.json (a string, or a list's first item). The images have no
# jq; whitespace is removed first so the result does not depend on how the CLI indents its JSON.
field() { tr -d ' \t\r\n' <"$init_json" | sed -n "s/.*\"$1\":\[*\"\([^\"]*\)\".*/\1/p"; }

as_root() { BAO_TOKEN=$root_token VAULT_TOKEN=$root_token "$cli" "$@"; }

wait_for "the server to answer" reachable

initialised=0
"$cli" operator init -status >/dev/null 2>&1 || initialised=$?
case $initialised in
0)
    [ -s "$init_json" ] || die "the server is initialised but $init_json is missing (initialised by something \
else?): unseal it by hand, or remove the stack's volumes to start over"
    log "already initialised"
    ;;
2)
    log "initialising: 1 key share, threshold 1 (demo only)"
    # Written aside and renamed, so an interrupted run never leaves a truncated init.json behind.
    "$cli" operator init -key-shares=1 -key-threshold=1 -format=json >"$init_json.tmp"
    mv "$init_json.tmp" "$init_json"
    ;;
*)
    die "cannot tell whether the server is initialised ($cli operator init -status exited $initialised)"
    ;;
esac

unseal_key=$(field unseal_keys_b64)
root_token=$(field root_token)
[ -n "$unseal_key" ] && [ -n "$root_token" ] || die "$init_json has no unseal key or no root token"

if [ "$(status_code)" -eq 2 ]; then
    log "unsealing"
    # The key is an argument for a moment (visible to this container's ps): the CLI reads stdin only from a TTY.
    "$cli" operator unseal "$unseal_key" >/dev/null
fi
wait_for "the server to become active" active

if [ -n "$api_audit_file" ] && ! as_root audit list -format=json 2>/dev/null | tr -d ' \t\r\n' | grep -q '"file/":'
then
    log "enabling the file audit device at file/ through the API"
    as_root audit enable file file_path="$api_audit_file" mode=0600 >/dev/null
fi
# The audit log is how security teams trace secret access; a server without it is not ready for the service.
as_root audit list -format=json | tr -d ' \t\r\n' | grep -q '"file/":{"type":"file"' \
    || die "no file audit device at file/ (declare it in the server config, or set INIT_API_AUDIT_FILE on Vault)"

# Replaced atomically, so the bootstrap job never reads a half-written token.
printf '%s\n' "$root_token" >"$token_file.tmp"
[ -z "$token_owner" ] || chown "$token_owner" "$token_file.tmp"
chmod 0400 "$token_file.tmp"
mv -f "$token_file.tmp" "$token_file"

log "ready: $addr is initialised, unsealed and active; operator token in $token_file"
