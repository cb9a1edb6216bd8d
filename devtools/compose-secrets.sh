#!/bin/sh
# The secret files compose.yaml hands to its containers (compose `secrets:`, mounted under /run/secrets): no
# password travels in an environment variable. Existing files are kept, so running this again changes nothing.
#   secrets/postgres_password   read by postgres (POSTGRES_PASSWORD_FILE)
#   secrets/database_url        read by the bootstrap job and the service (DATABASE_URL_FILE)
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
# Compose bind-mounts file secrets as they are, owner included, and the containers run as other users (postgres,
# 10001): the files are world-readable, inside a directory only their owner can enter.
chmod 0700 "$dir"
chmod 0644 "$dir/postgres_password" "$dir/database_url"
