"""Hanzo Twin environments for Gymnasium.

``make()`` gives a ``gymnasium.Env``, ``make_vec()`` a
``gymnasium.vector.VectorEnv`` and ``make_pool()`` an EnvPool-style
asynchronous batch. Each runs embedded (simulations on Rust threads inside
this process; no server) or, given ``url=``, remote (on a Hanzo Twin node
through ``/v1/gym/envs``).

Tasks: ``"cartpole-v0"`` (rapier3d), ``"ant-v5"`` (MuJoCo, Gymnasium's Ant-v5
on Gymnasium's own ant.xml), or a task spec (a dict, or YAML/JSON text) on a
scene (``scene=`` a file, or ``twin_id=`` on a node). With ``twin_id=`` and no
task, the twin's own control task: every moving joint's position and velocity
observed, each driven as ``action_type`` says, no reward terms (bring your own,
e.g. with a ``gymnasium.Wrapper``). A twin lives on a node: ``url=``, or
``HANZO_TWIN_API`` and ``HANZO_TWIN_TOKEN`` as the CLI reads them.

Registered with Gymnasium: ``gym.make("HanzoTwin/CartPole-v0")``,
``"HanzoTwin/Ant-v5"`` and ``"HanzoTwin/Twin-v0"`` (with ``twin_id=``), and
``gym.make_vec`` of each (vectorized natively).
"""

from __future__ import annotations

import math
import os
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


#: ``action_type`` values: how the twin's control task drives its joints.
_ACTION_TYPES = {
    "joint": "effort",  # the spec's "joint-level torque commands"
    "joint_effort": "effort",
    "joint_torque": "effort",
    "joint_position": "position",
    "joint_velocity": "velocity",
}


def _backend(task, num_envs, *, url, autoreset_mode, action_type=None, step_hz=None,
             camera_images=None, **kwargs):
    twin_id = kwargs.get("twin_id")
    if url is None and twin_id is not None:
        url = os.environ.get("HANZO_TWIN_API")
        if not url:
            raise ValueError(
                "twin_id: twins live on a node; pass url= or set HANZO_TWIN_API "
                "(and HANZO_TWIN_TOKEN), as the hanzo-twin CLI reads them")
    if task is None and twin_id is None:
        task = "cartpole-v0"
    action_mode = None
    if action_type is not None:
        if action_type not in _ACTION_TYPES:
            raise ValueError(f"action_type: {action_type!r} is not one of {', '.join(_ACTION_TYPES)}")
        if task is not None:
            raise ValueError("action_type: applies to a twin's own control task (twin_id= without a task); "
                             "a task spec names each action's mode")
        action_mode = _ACTION_TYPES[action_type]
    if step_hz is not None and (isinstance(step_hz, bool) or not isinstance(step_hz, (int, float)) or step_hz <= 0):
        raise ValueError(f"step_hz: environment steps per simulated second, a positive number, not {step_hz!r}")
    if url is None:
        kwargs.pop("token", None)
        kwargs.pop("twin_id", None)
        if step_hz is not None:
            task = _with_rate(task, step_hz)
        return Embedded(task, num_envs, autoreset_mode=autoreset_mode, **kwargs)
    # A twin's control task observes its cameras when the caller wants images.
    if task is not None or twin_id is None:
        camera_images = None
    return Remote(task, num_envs, url=url, autoreset_mode=autoreset_mode, action_mode=action_mode,
                  step_hz=step_hz, camera_images=camera_images, **kwargs)


def _with_rate(task, step_hz):
    """A task spec stepping ``step_hz`` times per simulated second (a whole
    number of its physics steps each)."""
    if isinstance(task, str) and ("\n" in task or task.lstrip().startswith("{")):
        import yaml

        task = yaml.safe_load(task)
    if not isinstance(task, dict):
        raise ValueError(f"step_hz: the built-in task {task!r} keeps its own rate")
    physics_hz = float(task.get("step_hz", 240.0))
    skip = physics_hz / step_hz
    if abs(skip - round(skip)) > 1e-9 or round(skip) < 1:
        raise ValueError(f"step_hz: the physics runs at {physics_hz} Hz, so an environment step must be "
                         f"a whole number of its steps: {step_hz} Hz is not")
    return {**task, "frame_skip": int(round(skip))}


class _DictObservations:
    """The observation as a dict of its parts (``joint_position``,
    ``joint_velocity``, a camera's image…), as the node names them. Images
    come shaped: colour (``rgb:<camera>``) as ``(height, width, 3)`` uint8,
    as image policies (SB3's ``MultiInputPolicy``) expect; depth and
    intensity as ``(height, width)`` floats."""

    def __init__(self, spec: dict, box: gym.spaces.Box):
        self.parts = []
        start = 0
        spaces = {}
        for part in spec.get("observation_parts") or [{"name": "observation", "size": box.shape[0]}]:
            end = start + part["size"]
            shape = tuple(part.get("shape") or ())
            colour = len(shape) == 3
            self.parts.append((part["name"], start, end, shape, colour))
            if colour:
                spaces[part["name"]] = gym.spaces.Box(low=0, high=255, shape=shape, dtype=np.uint8)
            else:
                low, high = box.low[start:end], box.high[start:end]
                if shape:
                    low, high = low.reshape(shape), high.reshape(shape)
                spaces[part["name"]] = gym.spaces.Box(low=low, high=high, dtype=box.dtype)
            start = end
        if start != box.shape[0]:
            raise RuntimeError(f"the node's observation parts cover {start} of {box.shape[0]} values")
        self.space = gym.spaces.Dict(spaces)

    @staticmethod
    def _part(values, shape, colour, lead=()):
        if colour:
            values = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.ascontiguousarray(values.reshape(lead + shape)) if shape else np.array(values)

    def one(self, obs):
        return {name: self._part(obs[a:b], shape, colour) for name, a, b, shape, colour in self.parts}

    def batch(self, obs):
        n = (obs.shape[0],)
        return {name: self._part(obs[:, a:b], shape, colour, n) if shape else np.ascontiguousarray(obs[:, a:b])
                for name, a, b, shape, colour in self.parts}


def _render_mode(render_mode):
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode: {render_mode!r} is not 'rgb_array' (or None)")
    return render_mode


def _size(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096:
        raise ValueError(f"{name}: a whole number of pixels from 1 to 4096, not {value!r}")
    return value


def _camera_images(obs_type, camera_size):
    """What a twin's control task is asked to observe of its cameras."""
    if obs_type != "dict" or camera_size is None:
        return None
    if not (isinstance(camera_size, (tuple, list)) and len(camera_size) == 2) \
            or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 512 for v in camera_size):
        raise ValueError(f"camera_size: (width, height), each 1 to 512 pixels, not {camera_size!r}")
    return {"width": camera_size[0], "height": camera_size[1]}


def _obs_type(obs_type):
    if obs_type not in ("box", "dict"):
        raise ValueError(f"obs_type: {obs_type!r} is not 'box' (one vector) or 'dict' (its named parts)")
    return obs_type


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

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task=None, *, url=None, token=None, engine=None, scene=None,
                 twin_id=None, domain_randomization=None, max_episode_steps=None,
                 obs_type="box", action_type=None, step_hz=None, camera_size=(84, 84),
                 render_mode=None, width=480, height=480, camera_name=None):
        self._backend = None
        obs_type = _obs_type(obs_type)
        self.render_mode = _render_mode(render_mode)
        self._picture = (camera_name, _size("width", width), _size("height", height))
        self._backend = _backend(task, 1, url=url, autoreset_mode="disabled", token=token,
                                 engine=engine, scene=scene, twin_id=twin_id,
                                 domain_randomization=domain_randomization,
                                 action_type=action_type, step_hz=step_hz,
                                 camera_images=_camera_images(obs_type, camera_size))
        self.metadata = {**self.metadata, "render_fps": 1.0 / self._backend.spec["dt"]}
        self.observation_space, self.action_space = _spaces(self._backend.spec)
        self._dict = None
        if obs_type == "dict":
            self._dict = _DictObservations(self._backend.spec, self.observation_space)
            self.observation_space = self._dict.space
        self._params: dict | None = None
        self.task = self._backend.spec["task"]
        self.engine = self._backend.spec["engine"]
        # The task's own time limit truncates; Gymnasium's TimeLimit is not needed.
        self.max_episode_steps = self._backend.spec["max_episode_steps"]
        #: The mean return at which the task counts as solved, if it has one.
        self.reward_threshold = self._backend.spec.get("reward_threshold")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        batch = self._backend.reset(seed)
        if batch.params:
            self._params = batch.params[0]
        return self._obs(batch.obs[0]), _row_info(self._backend.spec, batch, 0, self._params)

    def _obs(self, obs):
        return obs.copy() if self._dict is None else self._dict.one(obs)

    def step(self, action):
        action = np.asarray(action, dtype=np.float32).reshape(1, -1)
        batch = self._backend.step(action)
        return (self._obs(batch.obs[0]), float(batch.reward[0]), bool(batch.terminated[0]),
                bool(batch.truncated[0]), _row_info(self._backend.spec, batch, 0, self._params))

    def render(self):
        """The environment now as a ``(height, width, 3)`` uint8 array
        (``render_mode="rgb_array"``), from ``camera_name`` or the task's
        own view; None, with Gymnasium's warning, without a render mode."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the environment with "
                            "render_mode='rgb_array'")
            return None
        camera, width, height = self._picture
        return self._backend.render(0, camera, width, height)

    def close(self):
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
            self._backend = None


class HanzoTwinVectorEnv(VectorEnv):
    """``num_envs`` environments stepped together (Gymnasium's ``VectorEnv``),
    with the autoreset mode declared in ``metadata``."""

    def __init__(self, task=None, num_envs=1, *, autoreset_mode=AutoresetMode.NEXT_STEP,
                 url=None, token=None, threads=0, engine=None, scene=None, twin_id=None,
                 domain_randomization=None, obs_type="box", action_type=None, step_hz=None,
                 num_envs_per_worker=None, camera_size=(84, 84), render_mode=None, width=480,
                 height=480, camera_name=None):
        self._backend = None
        obs_type = _obs_type(obs_type)
        render_mode = _render_mode(render_mode)
        self._picture = (camera_name, _size("width", width), _size("height", height))
        if num_envs_per_worker is not None:
            if isinstance(num_envs_per_worker, bool) or not isinstance(num_envs_per_worker, int) \
                    or num_envs_per_worker < 1:
                raise ValueError(f"num_envs_per_worker: a positive whole number, not {num_envs_per_worker!r}")
            if threads:
                raise ValueError("num_envs_per_worker: give it or threads, not both")
            threads = math.ceil(num_envs / num_envs_per_worker)
        if isinstance(autoreset_mode, str):
            by_name = {m.name.lower(): m for m in AutoresetMode} | {m.value.lower(): m for m in AutoresetMode}
            key = autoreset_mode.lower()
            if key not in by_name:
                raise ValueError(f"autoreset_mode: {autoreset_mode!r} is not next_step, same_step or disabled")
            autoreset_mode = by_name[key]
        self._backend = _backend(task, num_envs, url=url, autoreset_mode=_MODES[autoreset_mode],
                                 token=token, threads=threads, engine=engine, scene=scene,
                                 twin_id=twin_id, domain_randomization=domain_randomization,
                                 action_type=action_type, step_hz=step_hz,
                                 camera_images=_camera_images(obs_type, camera_size))
        self.metadata = {"autoreset_mode": autoreset_mode, "render_modes": ["rgb_array"],
                         "render_fps": 1.0 / self._backend.spec["dt"]}
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = _spaces(self._backend.spec)
        self._dict = None
        if obs_type == "dict":
            self._dict = _DictObservations(self._backend.spec, self.single_observation_space)
            self.single_observation_space = self._dict.space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        #: The mean return at which the task counts as solved, if it has one.
        self.reward_threshold = self._backend.spec.get("reward_threshold")
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = render_mode
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
                final_obs[i] = self._one(batch.final_obs[i]) if batch.has_final[i] else None
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
        return self._batch_obs(batch.obs), self._infos(batch)

    def _one(self, obs):
        return obs.copy() if self._dict is None else self._dict.one(obs)

    def _batch_obs(self, obs):
        return obs if self._dict is None else self._dict.batch(obs)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)
        batch = self._backend.step(actions)
        return (self._batch_obs(batch.obs), batch.reward, batch.terminated, batch.truncated,
                self._infos(batch))

    def render(self):
        """Each environment now, a ``(height, width, 3)`` uint8 array apiece
        (``render_mode="rgb_array"``), as Gymnasium's vector environments
        give them: a tuple."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the environments with "
                            "render_mode='rgb_array'")
            return None
        camera, width, height = self._picture
        return tuple(self._backend.render(i, camera, width, height) for i in range(self.num_envs))

    def close_extras(self, **kwargs):
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()
            self._backend = None


class HanzoTwinPool:
    """EnvPool's asynchronous interface: ``send`` actions for some
    environments, ``recv`` the ``batch_size`` that finish first, with their
    ids in ``info["env_id"]``."""

    def __init__(self, task=None, num_envs=1, batch_size=None, *, url=None, token=None,
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


def make(task=None, **kwargs) -> HanzoTwinEnv:
    """One environment: ``task`` (default ``cartpole-v0``), or with
    ``twin_id=`` the twin's own control task, on a node (``url=`` or
    ``HANZO_TWIN_API``); otherwise in this process. ``obs_type="dict"``
    names the observation's parts; ``action_type`` (``joint``,
    ``joint_position``, ``joint_velocity``) says how the twin's joints are
    driven; ``step_hz`` sets environment steps per simulated second.
    ``render_mode="rgb_array"`` makes ``render()`` draw the environment
    (``width``, ``height``, ``camera_name``); with ``obs_type="dict"`` a
    twin's control task observes its cameras' images too, ``camera_size``
    (width, height) each."""
    return HanzoTwinEnv(task, **kwargs)


def make_vec(task=None, num_envs=1, **kwargs) -> HanzoTwinVectorEnv:
    """``num_envs`` environments as a ``gymnasium.vector.VectorEnv``;
    ``num_envs_per_worker`` sets how many each stepping thread takes."""
    return HanzoTwinVectorEnv(task, num_envs, **kwargs)


def make_pool(task=None, num_envs=1, batch_size=None, **kwargs) -> HanzoTwinPool:
    """An EnvPool-style asynchronous batch."""
    return HanzoTwinPool(task, num_envs, batch_size, **kwargs)


# Gymnasium ids: gym.make("HanzoTwin/CartPole-v0"), gym.make_vec(...) steps
# the batch natively ("vector_entry_point").
for _id, _task in (("HanzoTwin/CartPole-v0", "cartpole-v0"), ("HanzoTwin/Ant-v5", "ant-v5"),
                   ("HanzoTwin/Twin-v0", None)):
    if _id not in gym.registry:
        # The classes, not make(): Gymnasium reads their render modes.
        gym.register(id=_id, entry_point="hanzo_twin:HanzoTwinEnv",
                     vector_entry_point="hanzo_twin:HanzoTwinVectorEnv", kwargs={"task": _task})
