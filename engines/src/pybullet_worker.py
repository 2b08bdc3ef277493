"""The PyBullet worker of Hanzo Twin: one simulation, driven over stdin/stdout.

The Rust adapter (engines/src/pybullet.rs) owns this process. Every message,
both ways, is a frame: a little-endian u32 length and that much JSON. The
adapter sends the world already planned as multibodies (poses relative to
parent link frames, inertial frames, joint axes), so this file only calls
pybullet. Replies are {"ok": ...} or {"error": "..."}.
"""

import json
import struct
import sys

import pybullet as p

STDIN = sys.stdin.buffer
STDOUT = sys.stdout.buffer

GEOM = {
    "box": p.GEOM_BOX,
    "sphere": p.GEOM_SPHERE,
    "capsule": p.GEOM_CAPSULE,
    "cylinder": p.GEOM_CYLINDER,
    "plane": p.GEOM_PLANE,
    "mesh": p.GEOM_MESH,
}
JOINT = {
    "revolute": p.JOINT_REVOLUTE,
    "prismatic": p.JOINT_PRISMATIC,
    "fixed": p.JOINT_FIXED,
    "spherical": p.JOINT_SPHERICAL,
}


def read_frame():
    header = STDIN.read(4)
    if len(header) < 4:
        return None
    (n,) = struct.unpack("<I", header)
    return json.loads(STDIN.read(n))


def write_frame(value):
    data = json.dumps(value, allow_nan=True).encode()
    STDOUT.write(struct.pack("<I", len(data)))
    STDOUT.write(data)
    STDOUT.flush()


def shape(s):
    kind = s["kind"]
    args = {"shapeType": GEOM[kind]}
    if kind == "box":
        args["halfExtents"] = s["half_extents"]
    elif kind == "sphere":
        args["radius"] = s["radius"]
    elif kind in ("capsule", "cylinder"):
        args["radius"] = s["radius"]
        args["height"] = 2.0 * s["half_height"]
    elif kind == "mesh":
        args["vertices"] = s["vertices"]
        if s.get("indices"):
            args["indices"] = s["indices"]
    return args


def collision(colliders):
    """One collision shape for a link: a compound of its colliders."""
    if not colliders:
        return -1
    shapes = [shape(c["shape"]) for c in colliders]
    if len(shapes) == 1 and shapes[0]["shapeType"] != p.GEOM_MESH:
        c = colliders[0]
        return p.createCollisionShape(
            collisionFramePosition=c["position"], collisionFrameOrientation=c["orientation"], **shapes[0]
        )
    if any(s["shapeType"] == p.GEOM_MESH for s in shapes):
        # createCollisionShapeArray takes no vertex lists: meshes get one shape each.
        if len(shapes) > 1:
            raise ValueError("a body with a mesh collider may have only that collider on pybullet")
        c = colliders[0]
        return p.createCollisionShape(
            collisionFramePosition=c["position"], collisionFrameOrientation=c["orientation"], **shapes[0]
        )
    kw = {
        "shapeTypes": [s["shapeType"] for s in shapes],
        "halfExtents": [s.get("halfExtents", [0, 0, 0]) for s in shapes],
        "radii": [s.get("radius", 0.5) for s in shapes],
        "lengths": [s.get("height", 1.0) for s in shapes],
        "collisionFramePositions": [c["position"] for c in colliders],
        "collisionFrameOrientations": [c["orientation"] for c in colliders],
    }
    return p.createCollisionShapeArray(**kw)


class World:
    def __init__(self, plan):
        self.client = p.connect(p.DIRECT)
        p.setGravity(*plan["gravity"], physicsClientId=self.client)
        p.setPhysicsEngineParameter(
            fixedTimeStep=plan["dt"],
            numSubSteps=0,
            numSolverIterations=plan.get("solver_iterations") or 50,
            deterministicOverlappingPairs=1,
            physicsClientId=self.client,
        )
        self.substeps = plan["substeps"]
        # (multibody id, link index or -1) per observed body, in the plan's order.
        self.bodies = []
        # (multibody id, joint index) per commandable joint, in the plan's order.
        self.joints = []
        # (multibody id, joint index) per spherical joint: free, kept in states.
        self.balls = []
        self.inertial = []  # per body: inertial frame offset in the link frame
        for mb in plan["multibodies"]:
            self.add(mb)
        self.commands = [None] * len(self.joints)
        self.drives = plan["drives"]
        for i, d in enumerate(self.drives):
            mb, j = self.joints[i]
            # Multibody joints start with a velocity motor that holds them: release it.
            p.setJointMotorControl2(mb, j, p.VELOCITY_CONTROL, force=0, physicsClientId=self.client)
            if d and (d["stiffness"] > 0 or d["damping"] > 0):
                self.drive(i, d["target_position"], d["target_velocity"], d["stiffness"], d["damping"], d["max_force"])
        for i, q in plan["initial_coordinates"]:
            mb, j = self.joints[i]
            p.resetJointState(mb, j, q, physicsClientId=self.client)

    def add(self, mb):
        base = mb["base"]
        links = mb["links"]
        kw = dict(
            baseMass=base["mass"],
            baseCollisionShapeIndex=collision(base["colliders"]),
            basePosition=base["position"],
            baseOrientation=base["orientation"],
            baseInertialFramePosition=base["com"],
            baseInertialFrameOrientation=base["inertia_axes"],
            physicsClientId=self.client,
        )
        if links:
            kw.update(
                linkMasses=[l["mass"] for l in links],
                linkCollisionShapeIndices=[collision(l["colliders"]) for l in links],
                linkVisualShapeIndices=[-1] * len(links),
                linkPositions=[l["position"] for l in links],
                linkOrientations=[l["orientation"] for l in links],
                linkInertialFramePositions=[l["com"] for l in links],
                linkInertialFrameOrientations=[l["inertia_axes"] for l in links],
                linkParentIndices=[l["parent"] for l in links],
                linkJointTypes=[JOINT[l["joint"]] for l in links],
                linkJointAxis=[l["axis"] for l in links],
            )
        uid = p.createMultiBody(**kw)
        if base.get("observed", True):
            self.bodies.append((uid, -1))
            self.inertial.append((base["com"], base["origin"]))
        self.dynamics(uid, -1, base)
        for k, l in enumerate(links):
            self.bodies.append((uid, k))
            self.inertial.append((l["com"], l["origin"]))
            self.dynamics(uid, k, l)
            if l["joint"] == "spherical":
                self.balls.append((uid, k))
                # A spherical joint's motor holds it until its force is zero.
                p.setJointMotorControlMultiDof(
                    uid, k, p.POSITION_CONTROL, targetPosition=[0, 0, 0, 1],
                    positionGain=0, velocityGain=0, force=[0, 0, 0], physicsClientId=self.client,
                )
            elif l["joint"] != "fixed":
                self.joints.append((uid, k))
                if l.get("limits"):
                    lo, hi = l["limits"]
                    p.changeDynamics(uid, k, jointLowerLimit=lo, jointUpperLimit=hi, physicsClientId=self.client)
        if base.get("velocity"):
            lin, ang = base["velocity"]
            p.resetBaseVelocity(uid, lin, ang, physicsClientId=self.client)

    def dynamics(self, uid, link, spec):
        kw = dict(
            lateralFriction=spec["friction"],
            restitution=spec["restitution"],
            linearDamping=0.0,
            angularDamping=0.0,
            physicsClientId=self.client,
        )
        if spec.get("inertia") is not None and spec["mass"] > 0:
            kw["localInertiaDiagonal"] = spec["inertia"]
        p.changeDynamics(uid, link, **kw)

    def drive(self, i, position, velocity, stiffness, damping, max_force):
        """A PD drive: force = stiffness·(position − q) + damping·(velocity − q̇), as in USD."""
        mb, j = self.joints[i]
        p.setJointMotorControl2(
            mb,
            j,
            p.PD_CONTROL,
            targetPosition=position,
            targetVelocity=velocity,
            positionGain=stiffness,
            velocityGain=damping,
            force=max_force if max_force is not None else 1e30,
            physicsClientId=self.client,
        )

    def command(self, i, mode, value):
        mb, j = self.joints[i]
        d = self.drives[i] or {}
        max_force = d.get("max_force")
        if mode == "effort":
            p.setJointMotorControl2(mb, j, p.VELOCITY_CONTROL, force=0, physicsClientId=self.client)
            p.setJointMotorControl2(mb, j, p.TORQUE_CONTROL, force=value, physicsClientId=self.client)
        else:
            k, c = d.get("stiffness", 0.0), d.get("damping", 0.0)
            m = self.effective_mass(i)
            if mode == "position":
                if k <= 0:
                    k, c = 400.0 * m, 40.0 * m
                self.drive(i, value, 0.0, k, c, max_force)
            else:
                if c <= 0:
                    c = 40.0 * m
                self.drive(i, 0.0, value, 0.0, c, max_force)
        self.commands[i] = (mode, value)

    def effective_mass(self, i):
        return self.drives[i]["inertia"] if self.drives[i] else 1.0

    def step(self, n):
        efforts = [(self.joints[i], c[1]) for i, c in enumerate(self.commands) if c and c[0] == "effort"]
        for _ in range(n * self.substeps):
            # Torques last one simulation step: apply them before each.
            for (mb, j), value in efforts:
                p.setJointMotorControl2(mb, j, p.TORQUE_CONTROL, force=value, physicsClientId=self.client)
            p.stepSimulation(physicsClientId=self.client)

    def observe(self):
        bodies = []
        for (uid, link), (com, origin) in zip(self.bodies, self.inertial):
            if link < 0:
                pos, orn = p.getBasePositionAndOrientation(uid, physicsClientId=self.client)
                lin, ang = p.getBaseVelocity(uid, physicsClientId=self.client)
                # The base's reported position is its centre of mass: back to its frame.
                pos = sub(pos, rotate(orn, com))
            else:
                s = p.getLinkState(uid, link, computeLinkVelocity=1, physicsClientId=self.client)
                pos, orn, lin, ang = s[4], s[5], s[6], s[7]
                # The link frame sits at the joint: move to the body's own origin.
                pos = add(pos, rotate(orn, origin))
            bodies.append([list(pos), list(orn), list(lin), list(ang)])
        joints = []
        for uid, j in self.joints:
            q, qd = p.getJointState(uid, j, physicsClientId=self.client)[:2]
            joints.append([q, qd])
        return {"bodies": bodies, "joints": joints}

    def get_state(self):
        bases = {}
        for uid, link in self.bodies:
            if link < 0:
                pos, orn = p.getBasePositionAndOrientation(uid, physicsClientId=self.client)
                lin, ang = p.getBaseVelocity(uid, physicsClientId=self.client)
                bases[uid] = [list(pos), list(orn), list(lin), list(ang)]
        joints = [list(p.getJointState(uid, j, physicsClientId=self.client)[:2]) for uid, j in self.joints]
        balls = [
            [list(v) for v in p.getJointStateMultiDof(uid, j, physicsClientId=self.client)[:2]]
            for uid, j in self.balls
        ]
        return {
            "bases": [[k, v] for k, v in sorted(bases.items())],
            "joints": joints,
            "balls": balls,
            "commands": self.commands,
        }

    def set_state(self, state):
        for uid, (pos, orn, lin, ang) in state["bases"]:
            p.resetBasePositionAndOrientation(uid, pos, orn, physicsClientId=self.client)
            p.resetBaseVelocity(uid, lin, ang, physicsClientId=self.client)
        for (uid, j), (q, qd) in zip(self.joints, state["joints"]):
            p.resetJointState(uid, j, q, qd, physicsClientId=self.client)
        for (uid, j), (q, qd) in zip(self.balls, state.get("balls", [])):
            p.resetJointStateMultiDof(uid, j, q, qd, physicsClientId=self.client)
        for i, c in enumerate(state["commands"]):
            if c:
                self.command(i, c[0], c[1])

    def render(self, eye, dirs, max_depth):
        starts = [eye] * len(dirs)
        ends = [[eye[k] + d[k] * max_depth for k in range(3)] for d in dirs]
        out = []
        for a in range(0, len(dirs), 16000):
            hits = p.rayTestBatch(starts[a : a + 16000], ends[a : a + 16000], physicsClientId=self.client)
            for uid, link, fraction, _, _ in hits:
                out.append([uid, link, fraction * max_depth] if uid >= 0 else None)
        return out


def add(a, b):
    return [a[0] + b[0], a[1] + b[1], a[2] + b[2]]


def sub(a, b):
    return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]


def rotate(q, v):
    x, y, z, w = q
    u = (x, y, z)
    uv = (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])
    uuv = (u[1] * uv[2] - u[2] * uv[1], u[2] * uv[0] - u[0] * uv[2], u[0] * uv[1] - u[1] * uv[0])
    return [v[k] + 2.0 * (w * uv[k] + uuv[k]) for k in range(3)]


def main():
    world = None
    while True:
        msg = read_frame()
        if msg is None:
            return
        try:
            op = msg["op"]
            if op == "load":
                world = World(msg["plan"])
                reply = {"bodies": len(world.bodies), "joints": len(world.joints)}
            elif op == "step":
                for i, mode, value in msg.get("commands", []):
                    world.command(i, mode, value)
                world.step(msg["n"])
                reply = world.observe() if msg.get("observe") else None
            elif op == "observe":
                reply = world.observe()
            elif op == "get_state":
                reply = world.get_state()
            elif op == "set_state":
                world.set_state(msg["state"])
                reply = None
            elif op == "render":
                reply = world.render(msg["eye"], msg["dirs"], msg["max_depth"])
            elif op == "ids":
                reply = [[uid, link] for uid, link in world.bodies]
            else:
                raise ValueError(f"unknown op {op}")
            write_frame({"ok": reply})
        except Exception as e:  # every failure goes back to the adapter as an error
            write_frame({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
