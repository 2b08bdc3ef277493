"""An OPC-UA server (asyncua) playing a machine's PLC for tests/sync.rs.

It offers one endpoint, Basic256Sha256 with SignAndEncrypt, and trusts only
the client certificate it made (`client.der`); a second certificate it makes
(`stranger.der`) is not trusted. With --user and --password-file, that user
is the only login; otherwise sessions are anonymous.

Certificates (RSA 2048, self-signed, as OPC UA applications use) are written
into --dir on the first start and reused after, so a restarted server is the
same server:
    server.der, server-key.pem   the server's
    client.der, client-key.pem   the twin's (trusted)
    stranger.der, stranger-key.pem  a client nobody trusts

Variables, in namespace 2 with string ids: Arm.elbow, Arm.shoulder_pitch
(Double), Cell.temperature (Float), Arm.tool (Double[3]), Arm.status (String).

stdin takes lines `set <variable> <JSON value>`; each is answered `ok` or
`error: ...` on stdout. `ready` is printed once the server listens.
"""

import argparse
import asyncio
import datetime
import json
import logging
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

SERVER_URI = "urn:hanzo-twin:test-plc"
CLIENT_URI = "urn:hanzo-twin:client"


def make_pair(directory: Path, stem: str, name: str, uri: str, usage) -> None:
    cert_path = directory / f"{stem}.der"
    if cert_path.exists():
        return
    key = cert_gen.generate_private_key()
    # The application URI comes first among the alternative names, as
    # OPC UA (and async-opcua's host name check) expects.
    names = [
        x509.UniformResourceIdentifier(uri),
        x509.DNSName("localhost"),
        x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1")),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(key, name, {}, names, [usage], days=30)
    (directory / f"{stem}-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))


class OneUser(UserManager):
    def __init__(self, user: str, password: str):
        self.user = user
        self.password = password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.user and password == self.password:
            return User(role=UserRole.User, name=username)
        return None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--user")
    parser.add_argument("--password-file", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    args.dir.mkdir(parents=True, exist_ok=True)
    make_pair(args.dir, "server", "Hanzo Twin test PLC", SERVER_URI, ExtendedKeyUsageOID.SERVER_AUTH)
    make_pair(args.dir, "client", "Hanzo Twin", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
    make_pair(args.dir, "stranger", "Stranger", CLIENT_URI, ExtendedKeyUsageOID.CLIENT_AUTH)
    trusted = args.dir / "trusted"
    trusted.mkdir(exist_ok=True)
    (trusted / "client.der").write_bytes((args.dir / "client.der").read_bytes())

    users = None
    if args.user:
        users = OneUser(args.user, args.password_file.read_text().strip())
    server = Server(user_manager=users)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/hanzo/")
    server.set_server_name("Hanzo Twin test PLC")
    await server.set_application_uri(SERVER_URI)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    if args.user:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_identity_tokens([ua.AnonymousIdentityToken])
    await server.load_certificate(str(args.dir / "server.der"))
    await server.load_private_key(str(args.dir / "server-key.pem"))
    store = TrustStore([trusted], [])
    await store.load()
    server.set_certificate_validator(
        CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT,
            store,
        )
    )

    ns = await server.register_namespace("urn:hanzo-twin:test-plc:vars")
    objects = server.nodes.objects
    variables = {}
    for name, value, kind in [
        ("Arm.elbow", 0.0, ua.VariantType.Double),
        ("Arm.shoulder_pitch", 0.0, ua.VariantType.Double),
        ("Cell.temperature", 20.0, ua.VariantType.Float),
        ("Arm.tool", [0.0, 0.0, 0.0], ua.VariantType.Double),
        ("Arm.status", "idle", ua.VariantType.String),
    ]:
        node = await objects.add_variable(ua.NodeId(name, ns), name, ua.Variant(value, kind))
        variables[name] = (node, kind)

    async with server:
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            parts = line.strip().split(" ", 2)
            if len(parts) != 3 or parts[0] != "set" or parts[1] not in variables:
                print(f"error: cannot read `{line.strip()}`", flush=True)
                continue
            node, kind = variables[parts[1]]
            try:
                await node.write_value(ua.Variant(json.loads(parts[2]), kind))
                print("ok", flush=True)
            except Exception as e:  # noqa: BLE001 - reported to the test
                print(f"error: {e}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
