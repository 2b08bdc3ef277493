"""The two ways a batch of environments runs: inside this process on Rust
threads (``Embedded``), or on a Hanzo Twin node through ``/v1/gym/envs``
(``Remote``). Both give the same ``Batch`` of NumPy arrays."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Batch:
    """One call's results, a row per environment (``env_ids`` says which)."""

    env_ids: np.ndarray
    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    info: np.ndarray
    has_final: np.ndarray
    final_obs: np.ndarray
    final_info: np.ndarray
    episode: np.ndarray
    elapsed: np.ndarray
    #: Each row's episode randomization (dicts), when known.
    params: list[dict] | None


def gymnasium_ant_xml() -> str | None:
    """Gymnasium's own ant.xml, which the ant-v5 task runs on."""
    if os.environ.get("HANZO_TWIN_ANT_XML"):
        return os.environ["HANZO_TWIN_ANT_XML"]
    try:
        import gymnasium.envs.mujoco as mujoco_envs
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(mujoco_envs.__file__), "assets", "ant.xml")
    return path if os.path.exists(path) else None


def _task_text(task: Any) -> str:
    if isinstance(task, str):
        return task
    if isinstance(task, dict):
        return json.dumps(task)
    raise TypeError("task: a built-in task's name or a task spec (dict, or YAML/JSON text)")


def _randomization(domain_randomization: Any) -> dict | None:
    """The spec's block (``{enabled, parameters}``) or just its parameters.
    ``True`` means the twin's own block, which only a node has."""
    if domain_randomization is None or domain_randomization is False:
        return None
    if domain_randomization is True:
        raise ValueError(
            "domain_randomization=True takes the twin's own parameters: pass url= and twin_id=, "
            "or give the parameters, e.g. {'friction': {'min': 0.3, 'max': 0.9}}"
        )
    if not isinstance(domain_randomization, dict):
        raise TypeError("domain_randomization: a dict of parameters, or {'enabled': ..., 'parameters': ...}")
    if "parameters" in domain_randomization or "enabled" in domain_randomization:
        if not domain_randomization.get("enabled", True):
            return None
        return domain_randomization.get("parameters", {})
    return domain_randomization


class Embedded:
    """Environments inside this process, stepped on Rust threads."""

    def __init__(self, task, num_envs, *, threads=0, autoreset_mode="next_step",
                 domain_randomization=None, scene=None, engine=None):
        from . import _native

        randomization = _randomization(domain_randomization)
        self._env = _native.NativeVecEnv(
            _task_text(task),
            num_envs=num_envs,
            threads=threads,
            autoreset_mode=autoreset_mode,
            randomization=None if randomization is None else json.dumps(randomization),
            scene=None if scene is None else os.fspath(scene),
            engine=engine,
            ant_xml=gymnasium_ant_xml(),
        )
        self.spec = json.loads(self._env.spec_json())

    @staticmethod
    def _batch(t) -> Batch:
        params = None if t[11] is None else json.loads(t[11])
        return Batch(*t[:11], params)

    def reset(self, seed=None, mask=None) -> Batch:
        return self._batch(self._env.reset(seed, None if mask is None else np.asarray(mask, dtype=bool)))

    def step(self, actions) -> Batch:
        return self._batch(self._env.step(np.ascontiguousarray(actions, dtype=np.float32)))

    def send(self, actions, env_ids) -> None:
        self._env.send(np.ascontiguousarray(actions, dtype=np.float32),
                       np.ascontiguousarray(env_ids, dtype=np.int64))

    def send_reset(self, seed=None) -> None:
        self._env.send_reset(seed)

    def recv(self, count) -> Batch:
        return self._batch(self._env.recv(count))

    def render(self, env, camera, width, height) -> np.ndarray:
        return self._env.render(env, camera, width, height)

    def close(self) -> None:
        self._env = None


class RemoteError(RuntimeError):
    """A node refused a request; ``status``, ``code`` and ``field`` say why."""

    def __init__(self, status, body):
        error = body.get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.code = error.get("code")
        self.field = error.get("field")
        message = error.get("message", str(body))
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"HTTP {status}{where}: {message}")


def _refusal(status, raw: bytes) -> RemoteError:
    """The node's JSON error; any other body (a proxy's page) as text."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return RemoteError(status, body)


class Remote:
    """Environments on a node, through its HTTP API. Requests go from Rust
    (``_native.NodeConnection``) on one kept-alive connection; reset, step,
    send and recv trade safetensors buffers that become NumPy arrays there,
    the same ones ``Embedded`` gives."""

    def __init__(self, task, num_envs, *, url, token=None, threads=0, autoreset_mode="next_step",
                 domain_randomization=None, scene=None, engine=None, twin_id=None, timeout=120.0,
                 action_mode=None, step_hz=None, camera_images=None):
        from . import _native

        self._conn = _native.NodeConnection(url, token or os.environ.get("HANZO_TWIN_TOKEN"), timeout)
        body: dict[str, Any] = {
            "num_envs": num_envs,
            "threads": threads,
            "autoreset_mode": autoreset_mode,
        }
        # None with twin_id: the twin's own control task.
        if task is not None:
            body["task"] = task if isinstance(task, (str, dict)) else _task_text(task)
        if action_mode is not None:
            body["action_mode"] = action_mode
        if step_hz is not None:
            body["step_hz"] = float(step_hz)
        if camera_images is not None:
            body["camera_images"] = camera_images
        if isinstance(task, str) and ("\n" in task or task.lstrip().startswith("{")):
            import yaml  # a YAML task spec as text

            body["task"] = yaml.safe_load(task)
        # True: the twin's own block applies (the node reads it from the twin).
        if domain_randomization is not True:
            randomization = _randomization(domain_randomization)
            if randomization is not None:
                body["domain_randomization"] = {"enabled": True, "parameters": randomization}
        if scene is not None:
            body["scene"] = scene if isinstance(scene, dict) else {"uri": os.fspath(scene)}
        if engine is not None:
            body["engine"] = engine
        if twin_id is not None:
            body["twin_id"] = twin_id
        info = self._call("POST", "/v1/gym/envs", body)
        self.id = info["id"]
        self.spec = info

    def _call(self, method, path, body=None):
        status, raw = self._conn.request(method, path, None if body is None else json.dumps(body).encode())
        if status >= 400:
            raise _refusal(status, raw)
        return json.loads(raw) if raw else None

    def _call_batch(self, path, body=None, actions=None, env_ids=None):
        """A training-loop request (a JSON `body`, or `actions` and
        `env_ids` as arrays); the batch it answers, or None (202)."""
        status, answer = self._conn.batch(
            path, None if body is None else json.dumps(body).encode(), actions, env_ids)
        if status >= 400:
            raise _refusal(status, answer)
        return None if answer is None else Embedded._batch(answer)

    def reset(self, seed=None, mask=None) -> Batch:
        body: dict[str, Any] = {}
        if seed is not None:
            body["seed"] = int(seed)
        if mask is not None:
            body["reset_mask"] = [bool(m) for m in mask]
        return self._call_batch(f"/v1/gym/envs/{self.id}/reset", body)

    def step(self, actions) -> Batch:
        actions = np.ascontiguousarray(actions, dtype=np.float32)
        return self._call_batch(f"/v1/gym/envs/{self.id}/step", actions=actions)

    def send(self, actions, env_ids) -> None:
        self._call_batch(f"/v1/gym/envs/{self.id}/send",
                         actions=np.ascontiguousarray(actions, dtype=np.float32),
                         env_ids=np.ascontiguousarray(env_ids, dtype=np.int64))

    def send_reset(self, seed=None) -> None:
        body: dict[str, Any] = {"reset": True}
        if seed is not None:
            body["seed"] = int(seed)
        self._call_batch(f"/v1/gym/envs/{self.id}/send", body)

    def recv(self, count) -> Batch:
        return self._call_batch(f"/v1/gym/envs/{self.id}/recv", {"batch_size": int(count)})

    def render(self, env, camera, width, height) -> np.ndarray:
        from urllib.parse import urlencode

        from . import _native

        query = {"env": int(env), "width": int(width), "height": int(height)}
        if camera is not None:
            query["camera"] = camera
        status, raw = self._conn.request("GET", f"/v1/gym/envs/{self.id}/render?{urlencode(query)}")
        if status >= 400:
            raise _refusal(status, raw)
        return _native.rgb_png_array(raw)

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self._call("DELETE", f"/v1/gym/envs/{self.id}")
        except (OSError, RemoteError):
            pass  # the node may be gone already; nothing is left to free here
        self._conn = None
