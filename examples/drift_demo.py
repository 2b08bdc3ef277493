"""A physical robot arm whose joint friction changes, and its live twin
tracking it: drift is detected, the twin recalibrates, and its error falls
back under the threshold.

The "physical" arm is a second twin on the node (`demo-plant`), standing in
for hardware: this process commands it, reads its elbow encoder, adds
sensor noise and publishes the reading over MQTT, as a robot's controller
would. The live twin (`demo-arm`) follows those readings through its MQTT
source and gets the same commands through the API. Partway through, the
plant's elbow damping (its viscous joint friction) goes up eightfold.

    python examples/drift_demo.py                 # a node on :8080, mosquitto on :1883
    python examples/drift_demo.py --api http://127.0.0.1:8082 --token-file .data/node-1/auth/dev-token

Needs paho-mqtt (pip install paho-mqtt). Prints each sync event as it
happens; exits 0 once the drift has cleared after a recalibration, 1 if
that does not happen within --timeout seconds.
"""

import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt

ELBOW = "/World/Arm/elbow"
DAMPING = f"{ELBOW}.damping"
STEPS_PER_READING = 4  # 60 readings per simulated second at 240 Hz
STEPS_PER_MOVE = 96  # the arm swings between two targets every 0.4 s


class Api:
    def __init__(self, base: str, token: str | None):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if self.token:
            request.add_header("authorization", f"Bearer {self.token}")
        while True:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    text = response.read().decode()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as e:
                if e.code == 429:
                    # Over the token's request rate: wait as the node says.
                    time.sleep(float(e.headers.get("retry-after", "1")))
                    continue
                raise SystemExit(f"{method} {path}: HTTP {e.code}: {e.read().decode()}") from None


def twin(name: str, sync=None) -> dict:
    definition = {
        "name": name,
        "scene": {"uri": "robot-arm/scene.usda"},
        "engine": {"type": "rapier3d", "config": {"step_hz": 240, "substeps": 2}},
    }
    if sync:
        definition["sync"] = sync
    return definition


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--token-file", default=".data/node-1/auth/dev-token")
    parser.add_argument("--broker", default="127.0.0.1:1883", help="host:port, plain MQTT")
    parser.add_argument("--mqtt-user")
    parser.add_argument(
        "--mqtt-password-env",
        help="the variable holding the MQTT password, set for this process and the node",
    )
    parser.add_argument("--change-after", type=float, default=3.0, help="seconds before the friction changes")
    parser.add_argument("--noise", type=float, default=0.002, help="encoder noise, rad (standard deviation)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()

    token = None
    if args.token_file and os.path.exists(args.token_file):
        token = open(args.token_file).read().strip()
    api = Api(args.api, token)
    host, port = args.broker.rsplit(":", 1)
    run = f"{random.getrandbits(32):08x}"
    topic = f"demo/{run}/elbow"

    source = {
        "type": "mqtt",
        "name": "encoders",
        "broker": f"mqtt://{host}:{port}",
        "topic": f"demo/{run}/#",
        "payload": "number",
        "mapping": {"elbow": f"{ELBOW}.position"},
    }
    if args.mqtt_user:
        source["username"] = args.mqtt_user
    if args.mqtt_password_env:
        source["password_env"] = args.mqtt_password_env
    sync = {
        "mode": "realtime",
        "sources": [source],
        "drift_detection": {
            "enabled": True,
            "window_seconds": 1.5,
            "threshold": {"position": 0.02},
            "response": "auto_recalibrate",
            "recalibrate": {
                "parameters": {DAMPING: {"min": 0.5, "max": 200.0}},
                "max_evaluations": 40,
            },
        },
    }
    plant = api.call("POST", "/v1/twins", twin(f"demo-plant-{run}"))["id"]
    tracked = api.call("POST", "/v1/twins", twin(f"demo-arm-{run}", sync))["id"]
    for id in (plant, tracked):
        api.call("POST", f"/v1/twins/{id}/start", {"clock": "paused"})
    print(f"plant {plant}, live twin {tracked}; readings on {topic}")

    def status():
        return api.call("GET", f"/v1/twins/{tracked}/sync/status")

    deadline = time.monotonic() + args.timeout
    while status()["sources"][0]["state"] != "connected":
        if time.monotonic() > deadline:
            print("the twin's MQTT source never connected", file=sys.stderr)
            return 1
        time.sleep(0.05)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"arm-{run}")
    if args.mqtt_user:
        client.username_pw_set(args.mqtt_user, os.environ.get(args.mqtt_password_env or "", None))
    client.connect(host, int(port), keepalive=10)
    client.loop_start()

    nominal = api.call("GET", f"/v1/twins/{plant}/parameters?names={DAMPING}")["values"][DAMPING]
    started = time.monotonic()
    changed = False
    seen = 0
    recalibrated = False
    published = 0
    noise = random.Random(7)
    try:
        for step in range(0, 10**9, STEPS_PER_READING):
            if time.monotonic() > deadline:
                print("the drift did not clear in time", file=sys.stderr)
                return 1
            if not changed and time.monotonic() - started > args.change_after:
                api.call("PUT", f"/v1/twins/{plant}/parameters", {"values": {DAMPING: nominal * 8}})
                print(f"[plant] elbow damping {nominal:.3f} → {nominal * 8:.3f} N·m·s/rad")
                changed = True
            if step % STEPS_PER_MOVE == 0:
                target = 0.6 if (step // STEPS_PER_MOVE) % 2 == 0 else -0.6
                command = {"commands": [{"joint": ELBOW, "mode": "position", "value": target}]}
                for id in (plant, tracked):
                    api.call("POST", f"/v1/twins/{id}/commands", command)
            for id in (plant, tracked):
                api.call("POST", f"/v1/twins/{id}/step", {"steps": STEPS_PER_READING})
            joints = api.call("GET", f"/v1/twins/{plant}/observation?path={ELBOW}")["joints"]
            reading = joints[0]["position"] + noise.gauss(0.0, args.noise)
            client.publish(topic, repr(reading), qos=1).wait_for_publish(timeout=30)
            published += 1
            # The twin takes each reading before it steps on, so its
            # predictions and the readings line up step for step.
            while status()["sources"][0]["readings"] < published:
                if time.monotonic() > deadline:
                    print("the twin stopped taking readings", file=sys.stderr)
                    return 1
                time.sleep(0.002)
            history = f"/v1/twins/{tracked}/sync/history?cursor={seen}&limit=1000"
            events = api.call("GET", history)["events"]
            for event in events:
                seen = max(seen, event["seq"])
                if event["kind"] in ("drift", "drift_cleared", "recalibrated", "recalibration_failed"):
                    print(f"[twin]  {event['kind']}: {event['detail']}")
                if event["kind"] == "recalibrated" and event["recalibration"]["applied"]:
                    recalibrated = True
                if event["kind"] == "drift_cleared" and recalibrated:
                    fitted = api.call("GET", f"/v1/twins/{tracked}/parameters?names={DAMPING}")
                    print(f"done: the twin's elbow damping is {fitted['values'][DAMPING]:.3f}, "
                          f"the plant's {nominal * 8:.3f}")
                    return 0
    finally:
        client.loop_stop()
        client.disconnect()
    return 1


if __name__ == "__main__":
    sys.exit(main())
