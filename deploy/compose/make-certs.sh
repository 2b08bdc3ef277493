#!/bin/sh
# compose.yml's MQTT certificates, made once into the folder given ($1): a CA,
# mosquitto's server certificate (for the name `mosquitto`) and the node's
# client certificate. Keys are readable only by the user that uses them:
# mosquitto (uid 1883) and the node (uid 10001).
set -eu
out="$1"
if [ -f "$out/client.pem" ]; then
  echo "certificates already in $out"
  exit 0
fi
command -v openssl >/dev/null || apk add --no-cache openssl >/dev/null
cd "$out"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=hanzo-twin compose CA" \
  -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj "/CN=mosquitto" -keyout server.key -out server.csr
printf 'subjectAltName=DNS:mosquitto,DNS:localhost,IP:127.0.0.1\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
  -extfile server.ext -out server.pem
openssl req -newkey rsa:2048 -nodes -subj "/CN=hanzo-twin" -keyout client.key -out client.csr
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -out client.pem
rm -f ./*.csr server.ext ca.srl ca.key
chown 1883:1883 server.key
chown 10001:10001 client.key
chmod 600 server.key client.key
chmod 644 ca.pem server.pem client.pem
echo "certificates made in $out"
