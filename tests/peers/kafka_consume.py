"""Plays a consumer of the twin's Kafka stream: reads what is published to
TOPIC from the moment it joins (or, with `--from earliest`, from the start),
with confluent-kafka, and prints each message's key and value as one JSON
line, until `--count` messages have arrived (exit 0) or `--timeout` seconds
pass (exit 1).

    kafka_consume.py --brokers 127.0.0.1:9092 --count 5 TOPIC
"""

import argparse
import json
import sys
import time
import uuid

import kafka_tls
from confluent_kafka import Consumer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--from", dest="start", choices=["latest", "earliest"], default="latest")
    parser.add_argument("topic")
    kafka_tls.add_argument(parser)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": f"plant-{uuid.uuid4()}",
            "auto.offset.reset": args.start,
            # A small broker's first group join otherwise waits ~20 s.
            "session.timeout.ms": 6000,
            **kafka_tls.settings(args),
        }
    )
    consumer.subscribe([args.topic])
    received = []
    deadline = time.monotonic() + args.timeout
    while len(received) < args.count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            print(f"consumer: {message.error()}", file=sys.stderr)
            continue
        received.append(
            {
                "key": (message.key() or b"").decode(),
                "value": json.loads(message.value()),
            }
        )
    consumer.close()
    for entry in received[: args.count]:
        print(json.dumps(entry))
    if len(received) < args.count:
        print(f"only {len(received)} of {args.count} messages in {args.timeout} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
