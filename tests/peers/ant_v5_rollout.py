"""Gymnasium's own Ant-v5, driven from a given state with given actions: the
reference the Rust Ant task is checked against (engines/gym/tests/gym_ant.rs).

stdin: {"qpos": [...], "qvel": [...], "actions": [[...], ...]}
stdout: {"reset_obs": [...], "steps": [{"obs", "reward", "terminated", "truncated", "info"}]}
"""

import json
import sys

import gymnasium as gym
import numpy as np

request = json.load(sys.stdin)
env = gym.make("Ant-v5").unwrapped
env.reset(seed=0)
# As reset does: a fresh MuJoCo state, then the given positions and velocities.
import mujoco  # noqa: E402

mujoco.mj_resetData(env.model, env.data)
env.set_state(np.array(request["qpos"]), np.array(request["qvel"]))
out = {"reset_obs": env._get_obs().tolist(), "steps": []}
for action in request["actions"]:
    obs, reward, terminated, truncated, info = env.step(np.array(action, dtype=np.float32))
    out["steps"].append(
        {
            "obs": obs.tolist(),
            "reward": float(reward),
            "terminated": bool(terminated),
            "info": {k: float(v) for k, v in info.items()},
        }
    )
json.dump(out, sys.stdout)
