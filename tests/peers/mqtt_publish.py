"""Plays a sensor on a physical machine: publishes messages to an MQTT broker
with paho-mqtt, each at QoS 1 and confirmed by the broker before the next.

    mqtt_publish.py --port 8883 --tls ca.pem cert.pem key.pem TOPIC PAYLOAD [TOPIC PAYLOAD ...]
    mqtt_publish.py --port 1883 --user NAME --password SECRET TOPIC PAYLOAD ...
"""

import argparse
import sys

import paho.mqtt.client as mqtt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("messages", nargs="+", help="topic payload pairs")
    args = parser.parse_args()
    if len(args.messages) % 2:
        parser.error("messages come in topic payload pairs")

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor-peer")
    if args.tls:
        ca, cert, key = args.tls
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    if args.user:
        client.username_pw_set(args.user, args.password)
    client.connect(args.host, args.port, keepalive=10)
    client.loop_start()
    try:
        pairs = zip(args.messages[::2], args.messages[1::2])
        for topic, payload in pairs:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=30)
            if not info.is_published():
                print(f"publishing to {topic} was not confirmed", file=sys.stderr)
                return 1
    finally:
        client.disconnect()
        client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
