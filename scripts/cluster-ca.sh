#!/usr/bin/env bash
# A certificate authority of the cluster's own, and a certificate it signs
# for each node, with openssl: clients given the authority's certificate
# (`babel --tls-ca ca.pem`, or `TlsOptions::with_authority` in the library) trust every node
# it signed and move between them without a trust-on-first-use prompt, and
# refuse a node whose certificate it did not sign.
#
#   scripts/cluster-ca.sh DIR NAME...
#
# DIR gets ca.pem and ca.key (made once, kept: keep ca.key off the nodes),
# and NAME.pem / NAME.key for each NAME, a host name or IP address the
# clients use for that node (the certificate carries it as its subject
# alternative name). Start each node with
#   babel-server --tls-listen 0.0.0.0:7448 --tls-cert DIR/NAME.pem --tls-key DIR/NAME.key
# The node certificates last 825 days, the authority 10 years.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
cd "$dir"
umask 077
if [ ! -e ca.key ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=Babel cluster CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 644 ca.pem
  echo "made the authority: $dir/ca.pem (give it to clients), $dir/ca.key (keep it safe)"
fi
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san="IP:$name"; else san="DNS:$name"; fi
  safe=${name//:/_}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$safe.key" -out "$safe.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$san" > "$safe.ext"
  openssl x509 -req -in "$safe.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$safe.ext" -out "$safe.pem" 2>/dev/null
  rm -f "$safe.csr" "$safe.ext"
  chmod 644 "$safe.pem"
  echo "signed $dir/$safe.pem and $dir/$safe.key for $name"
done
