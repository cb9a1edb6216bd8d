#!/bin/sh
# A private CA and a server certificate for OpenBao, for TLS between the service and OpenBao (compose.yaml's `prod`
# profile; the TLS tests run it too). Usage: make-certs.sh [--force] [DIR]   (DIR defaults to secrets/tls)
#   DIR/ca.pem            the CA certificate: what clients trust (VAULT_CACERT, BAO_CACERT)
#   DIR/ca-key.pem        the CA's private key (0600): signs new server certificates; no container needs it
#   DIR/server.pem        OpenBao's certificate, signed by the CA, for the compose host names (openbao, openbao-2,
#                         openbao-3, openbao-tls, vault), localhost and 127.0.0.1
#   DIR/server-key.pem    OpenBao's private key (0600)
# Existing files are kept, so running this again changes nothing; --force makes a new CA and certificate (every
# client must then be given the new ca.pem). POSIX sh and the openssl command line (1.1.1 or 3.x).
set -eu

force=0
if [ "${1:-}" = "--force" ]; then
    force=1
    shift
fi
[ $# -le 1 ] || { echo "usage: $0 [--force] [DIR]" >&2; exit 2; }
dir=${1:-secrets/tls}
days=${CERT_DAYS:-825}
names="openbao openbao-2 openbao-3 openbao-tls vault localhost"

if [ "$force" -eq 0 ] && [ -s "$dir/ca.pem" ] && [ -s "$dir/server.pem" ] && [ -s "$dir/server-key.pem" ]; then
    echo "kept $dir/ca.pem, $dir/server.pem and $dir/server-key.pem (--force makes new ones)"
    exit 0
fi
command -v openssl >/dev/null || { echo "make-certs: openssl is needed" >&2; exit 1; }

umask 077
mkdir -p "$dir"
work=$(mktemp -d "$dir/.make-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

san=""
for name in $names; do
    san="${san}DNS:$name,"
done
san="${san}IP:127.0.0.1"
cat >"$work/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
cat >"$work/ca.ext" <<EOF
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

# EC P-256 keys: small, fast, accepted by Go's TLS (OpenBao) and by OpenSSL (the service). Quiet unless it fails.
run() { "$@" 2>"$work/err" || { cat "$work/err" >&2; exit 1; }; }
run openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca-key.pem"
run openssl req -new -key "$work/ca-key.pem" -subj "/CN=credentials-service OpenBao CA" -out "$work/ca.csr"
run openssl x509 -req -in "$work/ca.csr" -signkey "$work/ca-key.pem" -days "$days" -sha256 \
    -extfile "$work/ca.ext" -out "$work/ca.pem"
run openssl ecparam -name prime256v1 -genkey -noout -out "$work/server-key.pem"
run openssl req -new -key "$work/server-key.pem" -subj "/CN=openbao" -out "$work/server.csr"
run openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -set_serial "0x$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" -days "$days" -sha256 \
    -extfile "$work/server.ext" -out "$work/server.pem"
run openssl verify -CAfile "$work/ca.pem" "$work/server.pem" >/dev/null

# Certificates are public; keys stay readable by their owner only.
chmod 0644 "$work/ca.pem" "$work/server.pem"
chmod 0600 "$work/ca-key.pem" "$work/server-key.pem"
for file in ca-key.pem ca.pem server-key.pem server.pem; do
    mv -f "$work/$file" "$dir/$file"
done
echo "wrote $dir/ca.pem, $dir/ca-key.pem, $dir/server.pem and $dir/server-key.pem (CA and OpenBao certificate for $names, 127.0.0.1; $days days)"
