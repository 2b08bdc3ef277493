"""Stable-Baselines3 on a Hanzo Twin batch, stepped natively.

``make_vec_env(task, n)`` gives an SB3 ``VecEnv`` over one
``hanzo_twin.make_vec`` batch: every step of all ``n`` environments is one
call into the batch (Rust threads embedded, one request on a node), where
SB3's own ``make_vec_env`` would step ``n`` separate environments one by one
from Python. Episode statistics come from SB3's ``VecMonitor``.

    from stable_baselines3 import PPO
    from hanzo_twin.sb3 import make_vec_env

    env = make_vec_env("cartpole-v0", 8, seed=0)
    PPO("MlpPolicy", env).learn(60_000)

Needs the package's ``train`` extra (Stable-Baselines3).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from . import HanzoTwinVectorEnv

__all__ = ["HanzoTwinVecEnv", "make_vec_env"]


class HanzoTwinVecEnv(VecEnv):
    """SB3's ``VecEnv`` interface on a ``HanzoTwinVectorEnv`` that resets
    each finished environment in the step that finished it (Gymnasium's
    ``same_step`` autoreset, SB3's own convention): the final observation
    travels in ``infos[i]["terminal_observation"]``."""

    def __init__(self, venv: HanzoTwinVectorEnv):
        if venv.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError("HanzoTwinVecEnv needs a batch made with autoreset_mode=AutoresetMode.SAME_STEP")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None

    def reset(self):
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs, _ = self.venv.reset(seed=seed)
        self._reset_seeds()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = np.logical_or(terminated, truncated)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        final = info.get("final_obs")
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = final[i] if final is not None else obs[i]
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.venv, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        raise AttributeError(f"a Hanzo Twin batch has no per-environment method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)


def make_vec_env(task=None, n_envs: int = 1, seed: int | None = None, **kwargs) -> VecMonitor:
    """``n_envs`` environments of ``task`` (or, with ``twin_id=``, the twin's
    control task) as one SB3 ``VecEnv``, with episode statistics; ``seed``
    seeds environment ``i`` with ``seed + i``."""
    venv = HanzoTwinVectorEnv(task, n_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
    env = HanzoTwinVecEnv(venv)
    if seed is not None:
        env.seed(seed)
    return VecMonitor(env)
