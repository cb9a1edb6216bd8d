#!/bin/sh
# The secret files compose.yaml hands to its containers (compose `secrets:`, mounted under /run/secrets): no
# password travels in an environment variable. Existing files are kept, so running this again changes nothing.
#   secrets/postgres_password   read by postgres (POSTGRES_PASSWORD_FILE)
#   secrets/database_url        read by the bootstrap job and the service (DATABASE_URL_FILE)
#   secrets/openbao_seal_key    32 random bytes: OpenBao's static seal key, used with OPENBAO_SEAL=static
#                               (vault/seal-static.hcl); keep a copy: a server initialised with it opens with no other
set -eu
dir="${1:-secrets}"
umask 077
mkdir -p "$dir"
if [ ! -s "$dir/postgres_password" ]; then
    # 32 URL-safe characters: the password is pasted into a URL.
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 >"$dir/postgres_password"
    echo "wrote $dir/postgres_password"
fi
if [ ! -s "$dir/database_url" ]; then
    printf 'postgresql://credentials:%s@postgres:5432/credentials' "$(cat "$dir/postgres_password")" >"$dir/database_url"
    echo "wrote $dir/database_url"
fi
if [ ! -s "$dir/openbao_seal_key" ]; then
    head -c 32 /dev/urandom >"$dir/openbao_seal_key"
    echo "wrote $dir/openbao_seal_key"
fi
# Compose bind-mounts file secrets as they are, owner included, and the containers run as other users (postgres,
# 10001, openbao): the files are world-readable, inside a directory only their owner can enter. (Compose applies a
# secret's mode, uid and gid only under Swarm; a 0600 file would be unreadable to the containers.)
chmod 0700 "$dir"
chmod 0644 "$dir/postgres_password" "$dir/database_url" "$dir/openbao_seal_key"
