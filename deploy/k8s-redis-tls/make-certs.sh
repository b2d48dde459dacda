#!/bin/sh
# Makes a CA and a server certificate for the ps-train Redis (deploy/k8s-redis-tls), with openssl:
#   sh deploy/k8s-redis-tls/make-certs.sh certs/ [NAMESPACE]
# writes certs/ca.key (keep it off the cluster), certs/ca.crt, certs/tls.crt, certs/tls.key; then
#   kubectl -n ps-train create secret generic ps-train-redis-tls --type=kubernetes.io/tls \
#     --from-file=tls.crt=certs/tls.crt --from-file=tls.key=certs/tls.key --from-file=ca.crt=certs/ca.crt
# The server certificate names the Service (redis.NAMESPACE.svc, what PS_TRAIN_REDIS connects to),
# the headless Service's pods, and localhost/127.0.0.1 (kubectl port-forward; redis-cli in the pod).
set -eu
out=${1:?usage: make-certs.sh OUT_DIR [NAMESPACE]}
ns=${2:-ps-train}
days=${DAYS:-825}
umask 077
mkdir -p "$out"
cd "$out"
if [ -e tls.key ] || [ -e ca.key ]; then
  echo "make-certs.sh: $out already holds keys; remove them first" >&2
  exit 1
fi
printf '%s\n' 'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,keyCertSign,cRLSign' 'subjectKeyIdentifier=hash' > ca.ext
printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
  'extendedKeyUsage=serverAuth' 'authorityKeyIdentifier=keyid,issuer' \
  "subjectAltName=DNS:redis,DNS:redis.$ns,DNS:redis.$ns.svc,DNS:redis.$ns.svc.cluster.local,DNS:*.redis-headless.$ns.svc,DNS:*.redis-headless.$ns.svc.cluster.local,DNS:localhost,IP:127.0.0.1" > server.ext
openssl req -new -newkey rsa:3072 -nodes -keyout ca.key -subj "/CN=ps-train Redis CA" -out ca.csr 2>/dev/null
openssl x509 -req -in ca.csr -signkey ca.key -days 3650 -sha256 -extfile ca.ext -out ca.crt
openssl req -new -newkey rsa:2048 -nodes -keyout tls.key -subj "/CN=redis.$ns.svc" -out tls.csr 2>/dev/null
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" -sha256 -extfile server.ext -out tls.crt
rm -f ca.csr tls.csr ca.ext server.ext ca.srl
chmod 0644 ca.crt tls.crt
echo "make-certs.sh: wrote $out/ca.crt, $out/tls.crt, $out/tls.key (and $out/ca.key: keep it off the cluster)" >&2
