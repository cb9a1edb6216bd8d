#!/bin/sh
# compose.yaml's one-shot init job: initialise OpenBao (or Vault) on its first start, unseal it on every start
# (unless it has an auto-unseal seal, which unseals it by itself), check that its file audit device is on, and leave
# the operator token where the bootstrap job reads it. Safe to re-run: `docker compose up` runs it again after a
# restart left the server sealed.
#
# Seals: with the default (Shamir) seal, one key share with a threshold of one, kept on a volume beside the server
# it unseals (DEMO ONLY: that protects nothing from whoever can read the volume). With an auto-unseal seal
# (OPENBAO_SEAL=static in compose.yaml: vault/seal-static.hcl), it initialises with one recovery key share instead
# and never unseals anything: the server does. The root token reaches the bootstrap job, which revokes it once it
# has run (`credctl vault-bootstrap --revoke-token`); on later runs the token in init.json is refused, and this job
# hands the bootstrap job an empty token file, so it keeps what the first run set up. (The service never sees the
# root token: it logs in with AppRole, from the role_id and secret_id files the bootstrap job writes.)
#
# POSIX sh: the OpenBao and Vault images are Alpine, where sh is busybox. Settings (compose.yaml sets them):
#   INIT_CLI             bao (the OpenBao image) or vault (HashiCorp's image); default bao
#   INIT_ADDR            the server, e.g. http://openbao:8200
#   INIT_KEYS_DIR        where init.json (unseal or recovery key, root token) is kept; only the init jobs mount it
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

# seal_type: the server's seal, from `status -format=json` ("type":"shamir", or "static" and other auto-unseal
# seals; recovery_seal_type is another key).
seal_type() { "$cli" status -format=json 2>/dev/null | tr -d ' \t\r\n' | sed -n 's/.*"type":"\([^"]*\)".*/\1/p'; }
unsealed() { [ "$(status_code)" -eq 0 ]; }

# field NAME: the first string value of NAME in init.json (a string, or a list's first item). The images have no
# jq; whitespace is removed first so the result does not depend on how the CLI indents its JSON.
field() { tr -d ' \t\r\n' <"$init_json" | sed -n "s/.*\"$1\":\[*\"\([^\"]*\)\".*/\1/p"; }

as_root() { BAO_TOKEN=$root_token VAULT_TOKEN=$root_token "$cli" "$@"; }

wait_for "the server to answer" reachable
seal=$(seal_type)
[ -n "$seal" ] || die "cannot tell the server's seal type from $cli status"

initialised=0
"$cli" operator init -status >/dev/null 2>&1 || initialised=$?
case $initialised in
0)
    [ -s "$init_json" ] || die "the server is initialised but $init_json is missing (initialised by something \
else?): unseal it by hand, or remove the stack's volumes to start over"
    log "already initialised"
    ;;
2)
    # Written aside and renamed, so an interrupted run never leaves a truncated init.json behind.
    if [ "$seal" = shamir ]; then
        log "initialising: 1 key share, threshold 1 (demo only)"
        "$cli" operator init -key-shares=1 -key-threshold=1 -format=json >"$init_json.tmp"
    else
        log "initialising: $seal seal (auto-unseal), 1 recovery key share, threshold 1 (demo only)"
        "$cli" operator init -recovery-shares=1 -recovery-threshold=1 -format=json >"$init_json.tmp"
    fi
    mv "$init_json.tmp" "$init_json"
    ;;
*)
    die "cannot tell whether the server is initialised ($cli operator init -status exited $initialised)"
    ;;
esac

root_token=$(field root_token)
[ -n "$root_token" ] || die "$init_json has no root token"
if [ "$seal" = shamir ]; then
    unseal_key=$(field unseal_keys_b64)
    [ -n "$unseal_key" ] || die "$init_json has no unseal key (initialised with another seal?)"
    if [ "$(status_code)" -eq 2 ]; then
        log "unsealing"
        # The key is an argument for a moment (visible to this container's ps): the CLI reads stdin only from a TTY.
        "$cli" operator unseal "$unseal_key" >/dev/null
    fi
else
    # Never an unseal call: the server unseals itself with its seal key, or, given another key, stays sealed.
    wait_for "the server to unseal itself with its $seal seal (a seal key it was not initialised with leaves it \
sealed: restore that key)" unsealed
fi
wait_for "the server to become active" active

# Once the bootstrap job has revoked the root token (--revoke-token), the one in init.json is refused: the bootstrap
# job gets an empty token file, and keeps what its first run set up.
if ! as_root token lookup >/dev/null 2>&1; then
    : >"$token_file.tmp"
    [ -z "$token_owner" ] || chown "$token_owner" "$token_file.tmp"
    chmod 0400 "$token_file.tmp"
    mv -f "$token_file.tmp" "$token_file"
    log "ready: $addr is initialised, unsealed and active; the root token was revoked after the first bootstrap, \
so no operator token (to run the bootstrap again, make a new root token: README, \"Root token\")"
    exit 0
fi

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
