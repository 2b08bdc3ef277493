"""Training throughput with the learner included: Stable-Baselines3 PPO on
Ant-v5, side by side in one run, on

  - a training job's environments (hanzo_twin.train's batch: one natively
    stepped hanzo_twin batch, hanzo_twin.sb3), and
  - EnvPool's Ant-v5 through the SB3 adapter of EnvPool's own examples,

each for the same steps and the same PPO settings, alternating so the
machine's drift touches both alike. Prints environment steps per second
and the ratio. benches/train_throughput.rs runs it (`--quick` as a test).
"""

import argparse
import json
import sys
import time

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from hanzo_twin import train


class EnvPoolSB3(VecEnv):
    """EnvPool's examples' VecAdapter: EnvPool resets a finished
    environment on its next step; SB3 wants it reset in the same one."""

    def __init__(self, pool):
        self.pool = pool
        super().__init__(pool.spec.config.num_envs, pool.observation_space, pool.action_space)

    def reset(self):
        obs, _ = self.pool.reset()
        return obs

    def step_async(self, actions):
        self.actions = actions

    def step_wait(self):
        obs, rewards, term, trunc, info = self.pool.step(self.actions)
        dones = term | trunc
        infos = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = obs[i]
            infos[i]["TimeLimit.truncated"] = bool(trunc[i] and not term[i])
            obs[i] = self.pool.reset(np.array([i]))[0]
        return obs, rewards.astype(np.float32), dones, infos

    def close(self):
        self.pool.close()

    def get_attr(self, name, indices=None):
        return [None] * self.num_envs

    def set_attr(self, name, value, indices=None):
        pass

    def env_method(self, name, *args, indices=None, **kwargs):
        return [None] * self.num_envs

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * self.num_envs


def hanzo(n):
    return train._vec_env({"task": "ant-v5"}, n, 0)


def envpool_env(n):
    import envpool

    return VecMonitor(EnvPoolSB3(envpool.make("Ant-v5", env_type="gymnasium", num_envs=n, seed=0)))


def rate(make, n, steps):
    env = make(n)
    model = PPO("MlpPolicy", env, n_steps=max(64, 512 // n), batch_size=64, n_epochs=4, seed=0, verbose=0)
    started = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - started
    env.close()
    return model.num_timesteps / seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a short pass (as a test)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [4] if args.quick else [4, 16]
    steps = 1024 if args.quick else 32_768
    rounds = 1 if args.quick else 2
    print(f"SB3 PPO on Ant-v5, {steps} steps per run, learner included (steps/s)")
    print(f"{'envs':>5}  {'training job':>13}  {'EnvPool':>9}  {'ratio':>6}")
    results = []
    for n in sizes:
        ours, theirs = [], []
        for _ in range(rounds):
            ours.append(rate(hanzo, n, steps))
            theirs.append(rate(envpool_env, n, steps))
        a, b = float(np.median(ours)), float(np.median(theirs))
        print(f"{n:>5}  {a:>13.0f}  {b:>9.0f}  {a / b:>5.2f}x", flush=True)
        results.append({"envs": n, "job": a, "envpool": b})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
