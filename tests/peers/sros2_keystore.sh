#!/usr/bin/env bash
# Makes an SROS2 keystore the way `ros2 security create_keystore` and
# `create_enclave` lay it out, with openssl alone (no ROS install here):
#
#   sros2_keystore.sh KEYSTORE ENCLAVE [ENCLAVE...]
#
#   KEYSTORE/public/ca.cert.pem                 one CA for identities and permissions
#   KEYSTORE/enclaves/governance.p7s            the domain's rules, signed by the CA
#   KEYSTORE/enclaves/<enclave>/{identity_ca.cert.pem, permissions_ca.cert.pem,
#       governance.p7s, cert.pem, key.pem, permissions.xml, permissions.p7s}
#
# Governance as sros2 writes it: no unauthenticated participants, discovery
# and liveliness encrypted, RTPS signed, every topic's data encrypted and
# access controlled. Each enclave may publish and subscribe on every topic
# of domains 0 to 232. A second keystore made by this script is a second CA.
set -euo pipefail

keystore=$1
shift
mkdir -p "$keystore/public" "$keystore/private" "$keystore/enclaves"
ca_cert=$keystore/public/ca.cert.pem
ca_key=$keystore/private/ca.key.pem

if [[ ! -f $ca_cert ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$ca_key" -out "$ca_cert" -days 3650 -subj "/CN=sros2testCA" 2>/dev/null
fi

governance=$keystore/enclaves/governance.p7s
if [[ ! -f $governance ]]; then
    cat > "$keystore/enclaves/governance.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_governance.xsd">
  <domain_access_rules>
    <domain_rule>
      <domains><id_range><min>0</min><max>230</max></id_range></domains>
      <allow_unauthenticated_participants>false</allow_unauthenticated_participants>
      <enable_join_access_control>true</enable_join_access_control>
      <discovery_protection_kind>ENCRYPT</discovery_protection_kind>
      <liveliness_protection_kind>ENCRYPT</liveliness_protection_kind>
      <rtps_protection_kind>SIGN</rtps_protection_kind>
      <topic_access_rules>
        <topic_rule>
          <topic_expression>*</topic_expression>
          <enable_discovery_protection>true</enable_discovery_protection>
          <enable_liveliness_protection>true</enable_liveliness_protection>
          <enable_read_access_control>true</enable_read_access_control>
          <enable_write_access_control>true</enable_write_access_control>
          <metadata_protection_kind>ENCRYPT</metadata_protection_kind>
          <data_protection_kind>ENCRYPT</data_protection_kind>
        </topic_rule>
      </topic_access_rules>
    </domain_rule>
  </domain_access_rules>
</dds>
XML
    openssl smime -sign -text -in "$keystore/enclaves/governance.xml" -out "$governance" \
        -signer "$ca_cert" -inkey "$ca_key"
fi

for enclave in "$@"; do
    dir=$keystore/enclaves/${enclave#/}
    mkdir -p "$dir"
    cp "$ca_cert" "$dir/identity_ca.cert.pem"
    cp "$ca_cert" "$dir/permissions_ca.cert.pem"
    cp "$governance" "$dir/governance.p7s"
    # openssl reads / as the separator of names: the enclave's are escaped.
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/key.pem" -out "$dir/req.pem" -subj "/CN=${enclave//\//\\/}" 2>/dev/null
    openssl x509 -req -in "$dir/req.pem" -CA "$ca_cert" -CAkey "$ca_key" -CAcreateserial \
        -days 3650 -out "$dir/cert.pem" 2>/dev/null
    rm -f "$dir/req.pem"
    cat > "$dir/permissions.xml" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd">
  <permissions>
    <grant name="$enclave">
      <subject_name>CN=$enclave</subject_name>
      <validity><not_before>2020-01-01T00:00:00</not_before><not_after>2036-01-01T00:00:00</not_after></validity>
      <allow_rule>
        <domains><id_range><min>0</min><max>230</max></id_range></domains>
        <publish><topics><topic>*</topic></topics></publish>
        <subscribe><topics><topic>*</topic></topics></subscribe>
      </allow_rule>
      <default>DENY</default>
    </grant>
  </permissions>
</dds>
XML
    openssl smime -sign -text -in "$dir/permissions.xml" -out "$dir/permissions.p7s" \
        -signer "$ca_cert" -inkey "$ca_key"
done
