"""Plays the plant's side that listens to a twin: subscribes with paho-mqtt
and prints each message's payload on its own line, until `--count`
messages have arrived (exit 0) or `--timeout` seconds pass (exit 1).

    mqtt_subscribe.py --port 8883 --tls ca.pem cert.pem key.pem --count 10 TOPIC
"""

import argparse
import sys
import threading

import paho.mqtt.client as mqtt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("topic")
    args = parser.parse_args()

    received = []
    done = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(args.topic, qos=1)

    def on_message(client, userdata, message):
        received.append(message.payload.decode())
        if len(received) >= args.count:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plant-listener")
    if args.tls:
        ca, cert, key = args.tls
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=10)
    client.loop_start()
    ok = done.wait(args.timeout)
    client.disconnect()
    client.loop_stop()
    for payload in received[: args.count]:
        print(payload)
    if not ok:
        print(f"only {len(received)} of {args.count} messages in {args.timeout} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
