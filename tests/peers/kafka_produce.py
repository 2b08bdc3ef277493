"""Plays a plant's data pipeline: writes each line of stdin to TOPIC as one
Kafka message (confluent-kafka), all on partition 0 in order, and exits 0
once every message is delivered (1 if one is not within --timeout seconds).

    kafka_produce.py --brokers 127.0.0.1:9092 TOPIC < recording.jsonl
"""

import argparse
import sys

import kafka_tls
from confluent_kafka import Producer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("topic")
    kafka_tls.add_argument(parser)
    args = parser.parse_args()

    producer = Producer({"bootstrap.servers": args.brokers, **kafka_tls.settings(args)})
    failed = []

    def delivered(error, message):
        if error is not None:
            failed.append(str(error))

    lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    for line in lines:
        producer.produce(args.topic, line.encode(), partition=0, on_delivery=delivered)
    left = producer.flush(args.timeout)
    if left or failed:
        print(f"producer: {left} undelivered, failures: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
