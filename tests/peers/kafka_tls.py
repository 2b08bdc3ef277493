"""The Kafka peers' shared `--tls CA CERT KEY` option: mutual TLS settings
for confluent-kafka (librdkafka), checking the broker's certificate and
host name as the node does."""

import argparse


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls",
        nargs=3,
        metavar=("CA", "CERT", "KEY"),
        help="reach the brokers over TLS with this CA and client certificate",
    )


def settings(args: argparse.Namespace) -> dict:
    if not args.tls:
        return {}
    ca, cert, key = args.tls
    return {
        "security.protocol": "ssl",
        "ssl.ca.location": ca,
        "ssl.certificate.location": cert,
        "ssl.key.location": key,
        "ssl.endpoint.identification.algorithm": "https",
    }
