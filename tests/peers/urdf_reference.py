"""Loads URDF files with pybullet (an independent URDF parser) and prints, as
JSON, each robot's joints (type and limits) and link masses, to check our
URDF -> USD conversion against. Usage: urdf_reference.py FILE.urdf [...]
With --data-path it prints pybullet_data's folder instead."""

import json
import sys

import pybullet
import pybullet_data

TYPES = {
    pybullet.JOINT_REVOLUTE: "revolute",
    pybullet.JOINT_PRISMATIC: "prismatic",
    pybullet.JOINT_FIXED: "fixed",
    pybullet.JOINT_SPHERICAL: "spherical",
    pybullet.JOINT_PLANAR: "planar",
}


def describe(client, path):
    robot = pybullet.loadURDF(path, physicsClientId=client)
    base_name = pybullet.getBodyInfo(robot, physicsClientId=client)[0].decode()
    links = {base_name: pybullet.getDynamicsInfo(robot, -1, physicsClientId=client)[0]}
    joints = {}
    for j in range(pybullet.getNumJoints(robot, physicsClientId=client)):
        info = pybullet.getJointInfo(robot, j, physicsClientId=client)
        name = info[1].decode()
        child = info[12].decode()
        links[child] = pybullet.getDynamicsInfo(robot, j, physicsClientId=client)[0]
        joints[name] = {
            "type": TYPES.get(info[2], str(info[2])),
            "lower": info[8],
            "upper": info[9],
            "max_force": info[10],
            "child": child,
        }
    return {"base": base_name, "links": links, "joints": joints}


def main():
    if sys.argv[1:] == ["--data-path"]:
        print(pybullet_data.getDataPath())
        return
    client = pybullet.connect(pybullet.DIRECT)
    out = {path: describe(client, path) for path in sys.argv[1:]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
