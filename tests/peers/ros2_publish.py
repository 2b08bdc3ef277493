"""Plays a robot's ROS 2 graph with Cyclone DDS (ROS 2's default DDS):
publishes sensor_msgs/JointState and geometry_msgs/PoseStamped on ROS 2's
DDS topic names, every 50 ms, until killed or --seconds pass. DDS stays on
127.0.0.1: no multicast, discovery by unicast to loopback peers.

    ros2_publish.py --domain 7 --joints /robot/joint_states elbow=0.4,shoulder_pitch=-0.1 \
                    --pose /robot/ee_pose 0.1,0.2,0.3 [--enclave KEYSTORE/enclaves/robot]

With --enclave, DDS Security is on (SROS2), with Cyclone's builtin plugins.
"""

import argparse
import os
import sys
import sysconfig
import time
from dataclasses import dataclass


def cyclone_config(enclave):
    """DDS on 127.0.0.1 only: no multicast, discovery by unicast to loopback
    peers. With an SROS2 enclave, Cyclone's DDS Security plugins (PKI-DH,
    access control, AES-GCM-GMAC) load from the Debian build's directory."""
    security = ""
    if enclave:
        multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
        plugins = os.environ.get(
            "HANZO_TWIN_DDS_SECURITY_PLUGINS", f"/usr/lib/{multiarch}/libddsc0debian"
        )

        def lib(name, init, fini):
            return (
                f"<Library path='{plugins}/libdds_security_{name}.so' "
                f"initFunction='{init}' finalizeFunction='{fini}'/>"
            )

        f = f"file:{os.path.abspath(enclave)}"
        security = (
            "<Security><Authentication>"
            + lib("auth", "init_authentication", "finalize_authentication")
            + f"<IdentityCertificate>{f}/cert.pem</IdentityCertificate>"
            f"<PrivateKey>{f}/key.pem</PrivateKey>"
            f"<IdentityCA>{f}/identity_ca.cert.pem</IdentityCA>"
            "</Authentication><Cryptographic>"
            + lib("crypto", "init_crypto", "finalize_crypto")
            + "</Cryptographic><AccessControl>"
            + lib("ac", "init_access_control", "finalize_access_control")
            + f"<Governance>{f}/governance.p7s</Governance>"
            f"<PermissionsCA>{f}/permissions_ca.cert.pem</PermissionsCA>"
            f"<Permissions>{f}/permissions.p7s</Permissions>"
            "</AccessControl></Security>"
        )
    return (
        "<CycloneDDS><Domain id='any'><General>"
        "<Interfaces><NetworkInterface address='127.0.0.1'/></Interfaces>"
        "<AllowMulticast>false</AllowMulticast></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        "<Peers><Peer address='127.0.0.1'/></Peers></Discovery>"
        f"{security}{tracing()}</Domain></CycloneDDS>"
    )


def tracing():
    """Cyclone's own trace of discovery and security, to the file that
    HANZO_TWIN_DDS_TRACE names (for finding out why peers do not match)."""
    path = os.environ.get("HANZO_TWIN_DDS_TRACE")
    if not path:
        return ""
    return (
        "<Tracing><Category>discovery,plist</Category><Verbosity>finest</Verbosity>"
        f"<OutputFile>{path}</OutputFile></Tracing>"
    )


def enclave_argument():
    """--enclave, read before Cyclone is imported: it reads its
    configuration once, at import."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--enclave")
    return pre.parse_known_args()[0].enclave


os.environ["CYCLONEDDS_URI"] = cyclone_config(enclave_argument())

from cyclonedds.domain import DomainParticipant  # noqa: E402
from cyclonedds.idl import IdlStruct  # noqa: E402
from cyclonedds.idl.types import float64, int32, sequence, uint32  # noqa: E402
from cyclonedds.pub import DataWriter  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32
    nanosec: uint32


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time
    frame_id: str


@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header
    name: sequence[str]
    position: sequence[float64]
    velocity: sequence[float64]
    effort: sequence[float64]


@dataclass
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: float64
    y: float64
    z: float64


@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: float64
    y: float64
    z: float64
    w: float64


@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point
    orientation: Quaternion


@dataclass
class PoseStamped(IdlStruct, typename="geometry_msgs::msg::dds_::PoseStamped_"):
    header: Header
    pose: Pose


def dds_name(topic: str) -> str:
    """ROS 2 puts its topics under rt/ in DDS."""
    return "rt" + topic


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", type=int, default=0)
    parser.add_argument("--joints", nargs=2, metavar=("TOPIC", "NAME=POS,..."))
    parser.add_argument("--pose", nargs=2, metavar=("TOPIC", "X,Y,Z"))
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--enclave", help="an SROS2 enclave: DDS Security on")
    args = parser.parse_args()

    participant = DomainParticipant(args.domain)
    writers = []
    if args.joints:
        topic, spec = args.joints
        pairs = [p.split("=") for p in spec.split(",")]
        names = [n for n, _ in pairs]
        positions = [float(v) for _, v in pairs]
        writer = DataWriter(participant, Topic(participant, dds_name(topic), JointState))
        writers.append(
            lambda stamp, w=writer: w.write(
                JointState(Header(stamp, "base"), names, positions, [0.0] * len(names), [])
            )
        )
    if args.pose:
        topic, xyz = args.pose
        x, y, z = (float(v) for v in xyz.split(","))
        writer = DataWriter(participant, Topic(participant, dds_name(topic), PoseStamped))
        writers.append(
            lambda stamp, w=writer: w.write(
                PoseStamped(Header(stamp, "base"), Pose(Point(x, y, z), Quaternion(0, 0, 0, 1)))
            )
        )
    if not writers:
        parser.error("give --joints and/or --pose")
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        now = time.time()
        stamp = Time(int(now), int((now % 1) * 1e9))
        for write in writers:
            write(stamp)
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
