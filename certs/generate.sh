#!/bin/sh
# Regenerates the DEVELOPMENT certificates in this folder (never use them in production).
#
# Writes, next to this script:
#   ca.pem, ca-key.pem                 a development CA (EC P-256)
#   localhost.pem, localhost-key.pem   SAN DNS:localhost, IP:127.0.0.1, IP:::1; EC P-256 key, PKCS#8
#   localhost-sec1-key.pem             the same localhost key in SEC1 ("BEGIN EC PRIVATE KEY")
#   other.pem, other-key.pem           SAN DNS:other.test, for SNI tests; RSA 2048 key, PKCS#1
#                                      ("BEGIN RSA PRIVATE KEY")
#   client.pem, client-key.pem         a client certificate (clientAuth) for client-auth tests
#
# Idempotent: when every file exists and the certificates stay valid for 30 more days, it does
# nothing. `./generate.sh --force` regenerates everything (a new CA too, so every certificate
# changes). Needs OpenSSL 3 (for `openssl rsa -traditional`).
set -eu

DAYS=3650
DIR=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
cd "$DIR"

FILES="ca.pem ca-key.pem localhost.pem localhost-key.pem localhost-sec1-key.pem other.pem other-key.pem client.pem client-key.pem"

if [ "${1:-}" != "--force" ]; then
    complete=yes
    for f in $FILES; do
        [ -s "$f" ] || complete=no
    done
    if [ "$complete" = yes ] \
        && openssl x509 -checkend $((30 * 24 * 3600)) -noout -in ca.pem >/dev/null \
        && openssl x509 -checkend $((30 * 24 * 3600)) -noout -in localhost.pem >/dev/null \
        && openssl x509 -checkend $((30 * 24 * 3600)) -noout -in other.pem >/dev/null \
        && openssl x509 -checkend $((30 * 24 * 3600)) -noout -in client.pem >/dev/null; then
        echo "certificates in $DIR are complete and valid until $(openssl x509 -enddate -noout -in localhost.pem | cut -d= -f2); nothing to do (--force regenerates)"
        exit 0
    fi
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# run COMMAND...: runs quietly, shows openssl's chatter only when the command fails.
run() {
    if ! "$@" 2>"$TMP/stderr"; then
        cat "$TMP/stderr" >&2
        echo "generate.sh: failed: $*" >&2
        exit 1
    fi
}

# The CA.
run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/ca-key.pem"
run openssl req -x509 -new -key "$TMP/ca-key.pem" -sha256 -days "$DAYS" \
    -subj "/O=zergpool development/CN=zergpool development CA (do not trust)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$TMP/ca.pem"

# sign NAME CN EXTENSIONS: signs $TMP/NAME-key.pem with the CA into $TMP/NAME.pem.
sign() {
    printf '%s\n' "$3" > "$TMP/$1.ext"
    run openssl req -new -key "$TMP/$1-key.pem" -subj "/O=zergpool development/CN=$2" -out "$TMP/$1.csr"
    run openssl x509 -req -in "$TMP/$1.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca-key.pem" -CAcreateserial \
        -sha256 -days "$DAYS" -extfile "$TMP/$1.ext" -out "$TMP/$1.pem"
}

COMMON="basicConstraints=critical,CA:FALSE
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"

# localhost: EC P-256, PKCS#8 ("BEGIN PRIVATE KEY"), plus its SEC1 twin.
run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/localhost-key.pem"
run openssl ec -in "$TMP/localhost-key.pem" -out "$TMP/localhost-sec1-key.pem"
sign localhost localhost "$COMMON
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"

# other.test: RSA 2048, PKCS#1 ("BEGIN RSA PRIVATE KEY").
run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/other-pkcs8.pem"
run openssl rsa -in "$TMP/other-pkcs8.pem" -traditional -out "$TMP/other-key.pem"
sign other other.test "$COMMON
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:other.test"

# The client certificate: EC P-256, PKCS#8.
run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TMP/client-key.pem"
sign client "zergpool development client" "$COMMON
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

# Check the formats the tests rely on, then move everything into place.
grep -q "BEGIN PRIVATE KEY" "$TMP/localhost-key.pem"
grep -q "BEGIN EC PRIVATE KEY" "$TMP/localhost-sec1-key.pem"
grep -q "BEGIN RSA PRIVATE KEY" "$TMP/other-key.pem"
for name in localhost other client; do
    run openssl verify -CAfile "$TMP/ca.pem" "$TMP/$name.pem" >/dev/null
done
for f in $FILES; do
    mv "$TMP/$f" "$DIR/$f"
done
chmod 644 "$DIR"/*.pem

echo "generated in $DIR; the certificates expire on $(openssl x509 -enddate -noout -in "$DIR/localhost.pem" | cut -d= -f2)"
