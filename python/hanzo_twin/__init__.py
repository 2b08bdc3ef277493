"""Hanzo Twin environments for Gymnasium.

``make()`` gives a ``gymnasium.Env``, ``make_vec()`` a
``gymnasium.vector.VectorEnv`` and ``make_pool()`` an EnvPool-style
asynchronous batch. Each runs embedded (simulations on Rust threads inside
this process; no server) or, given ``url=``, remote (on a Hanzo Twin node
through ``/v1/gym/envs``).

Tasks: ``"cartpole-v0"`` (rapier3d), ``"ant-v5"`` (MuJoCo, Gymnasium's Ant-v5
on Gymnasium's own ant.xml), or a task spec (a dict, or YAML/JSON text) on a
scene (``scene=`` a file, or ``twin_id=`` on a node).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ._backend import Batch, Embedded, Remote, RemoteError

__all__ = ["make", "make_vec", "make_pool", "HanzoTwinEnv", "HanzoTwinVectorEnv", "HanzoTwinPool",
           "RemoteError", "AutoresetMode"]

_MODES = {
    AutoresetMode.NEXT_STEP: "next_step",
    AutoresetMode.SAME_STEP: "same_step",
    AutoresetMode.DISABLED: "disabled",
}


def _backend(task, num_envs, *, url, autoreset_mode, **kwargs):
    if url is None:
        kwargs.pop("token", None)
        if kwargs.pop("twin_id", None) is not None:
            raise ValueError("twin_id: twins live on a node; pass url= to use one")
        return Embedded(task, num_envs, autoreset_mode=autoreset_mode, **kwargs)
    return Remote(task, num_envs, url=url, autoreset_mode=autoreset_mode, **kwargs)


def _spaces(spec: dict):
    obs = spec["observation_space"]
    act = spec["action_space"]
    observation_space = gym.spaces.Box(
        low=np.asarray([-np.inf if v is None else v for v in obs["low"]], dtype=np.float64),
        high=np.asarray([np.inf if v is None else v for v in obs["high"]], dtype=np.float64),
        dtype=np.float64,
    )
    action_space = gym.spaces.Box(
        low=np.asarray(act["low"], dtype=np.float32),
        high=np.asarray(act["high"], dtype=np.float32),
        dtype=np.float32,
    )
    return observation_space, action_space


def _row_info(spec: dict, batch: Batch, row: int, params: dict | None) -> dict[str, Any]:
    info: dict[str, Any] = {key: float(batch.info[row, j]) for j, key in enumerate(spec["info_keys"])}
    if params:
        info["randomization"] = params
    return info


class HanzoTwinEnv(gym.Env):
    """One environment (Gymnasium's ``Env``): reset after an episode ends."""

    metadata = {"render_modes": []}

    def __init__(self, task="cartpole-v0", *, url=None, token=None, engine=None, scene=None,
                 twin_id=None, domain_randomization=None, max_episode_steps=None):
        self._backend = _backend(task, 1, url=url, autoreset_mode="disabled", token=token,
                                 engine=engine, scene=scene, twin_id=twin_id,
                                 domain_randomization=domain_randomization)
        self.observation_space, self.action_space = _spaces(self._backend.spec)
        self._params: dict | None = None
        self.task = self._backend.spec["task"]
        self.engine = self._backend.spec["engine"]
        # The task's own time limit truncates; Gymnasium's TimeLimit is not needed.
        self.max_episode_steps = self._backend.spec["max_episode_steps"]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        batch = self._backend.reset(seed)
        if batch.params:
            self._params = batch.params[0]
        return batch.obs[0].copy(), _row_info(self._backend.spec, batch, 0, self._params)

    def step(self, action):
        action = np.asarray(action, dtype=np.float32).reshape(1, -1)
        batch = self._backend.step(action)
        return (batch.obs[0].copy(), float(batch.reward[0]), bool(batch.terminated[0]),
                bool(batch.truncated[0]), _row_info(self._backend.spec, batch, 0, self._params))

    def close(self):
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
            self._backend = None


class HanzoTwinVectorEnv(VectorEnv):
    """``num_envs`` environments stepped together (Gymnasium's ``VectorEnv``),
    with the autoreset mode declared in ``metadata``."""

    def __init__(self, task="cartpole-v0", num_envs=1, *, autoreset_mode=AutoresetMode.NEXT_STEP,
                 url=None, token=None, threads=0, engine=None, scene=None, twin_id=None,
                 domain_randomization=None):
        if isinstance(autoreset_mode, str):
            by_name = {m.name.lower(): m for m in AutoresetMode} | {m.value.lower(): m for m in AutoresetMode}
            key = autoreset_mode.lower()
            if key not in by_name:
                raise ValueError(f"autoreset_mode: {autoreset_mode!r} is not next_step, same_step or disabled")
            autoreset_mode = by_name[key]
        self._backend = _backend(task, num_envs, url=url, autoreset_mode=_MODES[autoreset_mode],
                                 token=token, threads=threads, engine=engine, scene=scene,
                                 twin_id=twin_id, domain_randomization=domain_randomization)
        self.metadata = {"autoreset_mode": autoreset_mode, "render_modes": []}
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = _spaces(self._backend.spec)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = None
        self._params: list[dict | None] = [None] * num_envs
        self._keys = self._backend.spec["info_keys"]

    def _infos(self, batch: Batch) -> dict[str, Any]:
        if batch.params is not None:
            for row, p in enumerate(batch.params):
                self._params[int(batch.env_ids[row])] = p
        infos: dict[str, Any] = {}
        mask = np.ones(self.num_envs, dtype=bool)
        for j, key in enumerate(self._keys):
            infos[key] = batch.info[:, j].copy()
            infos["_" + key] = mask
        infos["episode_id"] = batch.episode.astype(np.int64)
        infos["_episode_id"] = mask
        if any(p for p in self._params):
            randomization = np.empty(self.num_envs, dtype=object)
            for i, p in enumerate(self._params):
                randomization[i] = p
            infos["randomization"] = randomization
            infos["_randomization"] = np.array([p is not None for p in self._params])
        if batch.has_final.any():
            final_obs = np.empty(self.num_envs, dtype=object)
            for i in range(self.num_envs):
                final_obs[i] = batch.final_obs[i].copy() if batch.has_final[i] else None
            infos["final_obs"] = final_obs
            infos["_final_obs"] = batch.has_final.copy()
            final_info: dict[str, Any] = {}
            for j, key in enumerate(self._keys):
                final_info[key] = np.where(batch.has_final, batch.final_info[:, j], 0.0)
                final_info["_" + key] = batch.has_final.copy()
            infos["final_info"] = final_info
            infos["_final_info"] = batch.has_final.copy()
        return infos

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if isinstance(seed, (list, tuple)):
            # Gymnasium's per-environment seeds: ours are seed + i.
            if any(s != seed[0] + i for i, s in enumerate(seed)):
                raise ValueError("seed: per-environment seeds must be consecutive (seed + i)")
            seed = seed[0]
        mask = None if options is None else options.get("reset_mask")
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        batch = self._backend.reset(seed, mask)
        return batch.obs, self._infos(batch)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        batch = self._backend.step(actions)
        return batch.obs, batch.reward, batch.terminated, batch.truncated, self._infos(batch)

    def close_extras(self, **kwargs):
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
            self._backend = None


class HanzoTwinPool:
    """EnvPool's asynchronous interface: ``send`` actions for some
    environments, ``recv`` the ``batch_size`` that finish first, with their
    ids in ``info["env_id"]``."""

    def __init__(self, task="cartpole-v0", num_envs=1, batch_size=None, *, url=None, token=None,
                 threads=0, engine=None, scene=None, twin_id=None, domain_randomization=None):
        self._backend = _backend(task, num_envs, url=url, autoreset_mode="next_step", token=token,
                                 threads=threads, engine=engine, scene=scene, twin_id=twin_id,
                                 domain_randomization=domain_randomization)
        self.num_envs = num_envs
        self.batch_size = batch_size or num_envs
        if not 1 <= self.batch_size <= num_envs:
            raise ValueError(f"batch_size: must be between 1 and num_envs ({num_envs})")
        self.observation_space, self.action_space = _spaces(self._backend.spec)
        self._keys = self._backend.spec["info_keys"]

    def async_reset(self, seed: int | None = None) -> None:
        self._backend.send_reset(seed)

    def send(self, actions, env_id) -> None:
        actions = np.asarray(actions, dtype=np.float32)
        env_id = np.asarray(env_id, dtype=np.int64)
        self._backend.send(actions.reshape(len(env_id), -1), env_id)

    def recv(self):
        batch = self._backend.recv(self.batch_size)
        info: dict[str, Any] = {key: batch.info[:, j] for j, key in enumerate(self._keys)}
        info["env_id"] = batch.env_ids
        info["episode_id"] = batch.episode.astype(np.int64)
        info["elapsed_step"] = batch.elapsed.astype(np.int64)
        return batch.obs, batch.reward, batch.terminated, batch.truncated, info

    def reset(self, seed: int | None = None):
        self._backend.send_reset(seed)
        batch = self._backend.recv(self.num_envs)
        order = np.argsort(batch.env_ids)
        return batch.obs[order], {"env_id": batch.env_ids[order]}

    def step(self, actions, env_id=None):
        env_id = np.arange(self.num_envs) if env_id is None else np.asarray(env_id)
        self.send(actions, env_id)
        return self.recv()

    def close(self):
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def make(task="cartpole-v0", **kwargs) -> HanzoTwinEnv:
    """One environment. ``url=`` runs it on a node; otherwise in this process."""
    return HanzoTwinEnv(task, **kwargs)


def make_vec(task="cartpole-v0", num_envs=1, **kwargs) -> HanzoTwinVectorEnv:
    """``num_envs`` environments as a ``gymnasium.vector.VectorEnv``."""
    return HanzoTwinVectorEnv(task, num_envs, **kwargs)


def make_pool(task="cartpole-v0", num_envs=1, batch_size=None, **kwargs) -> HanzoTwinPool:
    """An EnvPool-style asynchronous batch."""
    return HanzoTwinPool(task, num_envs, batch_size, **kwargs)
