"""RLlib on a Ray cluster, over Hanzo Twin environments on a node.

The ``rllib`` backend of a node's training jobs (``python -m
hanzo_twin.train``): the worker process is the Ray driver. It connects to
the cluster at ``RAY_ADDRESS`` (the node's ``scheduler.ray_address``), and
RLlib's PPO runs there: the learner in this process, the env runners as Ray
actors wherever the cluster places them. Each env runner steps one remote
batch (``hanzo_twin.make_vec(url=...)``) of ``num_envs / env_runners``
environments on the node, which routes it to the node that holds the batch
or the twin: one request steps the runner's whole batch.

Checkpoints are RLlib's own (``Algorithm.save_to_path``), zipped into one
file so the node keeps them as it keeps Stable-Baselines3's. Evaluation
needs no cluster: it loads the policy's RL module and steps the task here.

Needs the package's ``rllib`` extra (``ray[rllib]``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import zipfile

#: What RLlib's PPO takes, by the names its ``PPOConfig.training`` uses.
PPO_HYPERPARAMETERS = (
    "lr", "gamma", "lambda_", "clip_param", "vf_clip_param", "entropy_coeff", "vf_loss_coeff",
    "kl_coeff", "kl_target", "grad_clip", "num_epochs", "minibatch_size",
    "train_batch_size_per_learner",
)
#: Seconds between progress events.
REPORT_EVERY_S = 1.0
#: The checkpoint's own record of where training stood.
STATE_FILE = "hanzo_twin.json"
#: Seconds an env runner waits for its batch's steps before RLlib counts the
#: sample as failed (a loaded node answers late, not never).
SAMPLE_TIMEOUT_S = 120.0


def env_creator(config: dict):
    """An env runner's environments: one remote batch on the node (RLlib
    asks with ``num_envs`` set), or one environment (without)."""
    import hanzo_twin
    from hanzo_twin.train import env_kwargs

    kwargs = {"url": config["url"], "token": os.environ.get("HANZO_TWIN_TOKEN"), **env_kwargs(config)}
    task = config.get("task")
    if "num_envs" in config:
        return hanzo_twin.make_vec(task, num_envs=int(config["num_envs"]), **kwargs)
    return hanzo_twin.make(task, **kwargs)


#: The name ``env_creator`` is registered under with Ray (which hands it to
#: every env runner of the job).
ENV_NAME = "hanzo-twin"


def _config(spec: dict, url: str):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    register_env(ENV_NAME, env_creator)

    runners = int(spec.get("env_runners") or 2)
    num_envs = int(spec.get("num_envs", 8))
    per_runner = max(1, num_envs // runners)
    env_config = {"url": url, "task": spec.get("task"), "twin": spec.get("twin"),
                  "engine": spec.get("engine")}
    hyper = dict(spec.get("hyperparameters") or {})
    lr = hyper.get("lr")
    if isinstance(lr, str) and lr.startswith("lin_"):
        # rl-zoo's linear schedule, as RLlib writes one: (step, value) pairs.
        hyper["lr"] = [[0, float(lr[4:])], [int(spec["total_steps"]), 0.0]]
    return (
        PPOConfig()
        .environment(env=ENV_NAME, env_config=env_config)
        .env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=per_runner,
            # RLlib asks env_creator for the whole batch: it is stepped as
            # one request, not one per environment.
            gym_env_vectorize_mode="vector_entry_point",
            sample_timeout_s=SAMPLE_TIMEOUT_S,
        )
        .learners(num_learners=0)
        .training(**hyper)
        .debugging(seed=int(spec.get("seed", 0)))
    )


def _save(algo, workdir: str, steps: int, final: bool, emit) -> None:
    """The algorithm's checkpoint, zipped; ``policy-<steps>.zip`` as the node
    names policies."""
    name = "policy-final.zip" if final else f"policy-{steps:012d}.zip"
    # RLlib reads a relative path as a URI.
    workdir = os.path.abspath(workdir)
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".checkpoint-") as folder:
        algo.save_to_path(folder)
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump({"steps": int(steps)}, f)
        partial = os.path.join(workdir, f".saving-{name}")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
            for root, _, files in os.walk(folder):
                for file in files:
                    full = os.path.join(root, file)
                    z.write(full, os.path.relpath(full, folder))
    # Renamed whole, so the node never reads half a file.
    path = os.path.join(workdir, name)
    os.replace(partial, path)
    emit("checkpoint", path=path, name=name, steps=int(steps), final=final)


def _unzipped(path: str, into: str) -> tuple[str, int]:
    """A zipped checkpoint unpacked into a fresh folder, and its steps."""
    # RLlib reads a relative path as a URI.
    folder = tempfile.mkdtemp(dir=os.path.abspath(into), prefix=".restored-")
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            # A checkpoint names files inside itself only.
            target = os.path.realpath(os.path.join(folder, member))
            if not target.startswith(os.path.realpath(folder) + os.sep):
                raise ValueError(f"{os.path.basename(path)}: {member!r} points outside the checkpoint")
        z.extractall(folder)
    steps = 0
    state = os.path.join(folder, STATE_FILE)
    if os.path.exists(state):
        with open(state) as f:
            steps = int(json.load(f).get("steps", 0))
    return folder, steps


def _module_in(folder: str):
    """The policy's RL module inside an algorithm checkpoint."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(os.path.join(
        folder, COMPONENT_LEARNER_GROUP, COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID))


def _on_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def train(spec: dict, workdir: str, resume: str | None, emit, stop_requested, evaluate) -> int:
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        emit("error", message="backend rllib needs a Ray cluster: set scheduler.ray_address on the node")
        return 2
    if _on_loopback(address):
        # A cluster on this machine, reached over loopback: Ray would swap
        # 127.0.0.1 for this machine's outward address, where a cluster
        # started on loopback does not listen. Its single-machine mode
        # keeps the driver on loopback too. (Read when ray is imported.)
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN, NUM_ENV_STEPS_SAMPLED, NUM_EPISODES

    url = os.environ["HANZO_TWIN_API"]
    # The env runners reach the node as the job's submitter; Ray hands the
    # token to the job's own worker processes only.
    env_vars = {"HANZO_TWIN_TOKEN": os.environ.get("HANZO_TWIN_TOKEN", "")}
    for name in ("HANZO_TWIN_CA_CERT",):
        if os.environ.get(name):
            env_vars[name] = os.environ[name]
    ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=False,
             logging_level="ERROR")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
    emit("log", message=f"on the Ray cluster at {address}: {len(nodes)} nodes, {cpus:g} CPUs")
    total = int(spec["total_steps"])
    algo = _config(spec, url).build_algo()
    base = 0
    if resume:
        folder, base = _unzipped(resume, workdir)
        algo.restore_from_path(folder)
        shutil.rmtree(folder, ignore_errors=True)
        emit("log", message=f"resumed from {os.path.basename(resume)} at {base} steps")
    every = int(spec.get("checkpoint_every_steps") or max(total // 10, 1))
    next_checkpoint = (base // every + 1) * every
    started = last_time = time.monotonic()
    steps = last_steps = base
    episodes, mean_return = 0, None
    while steps < total and not stop_requested():
        runners = algo.train().get(ENV_RUNNER_RESULTS, {})
        # Counted per iteration: a restored algorithm's lifetime counters
        # may or may not carry on from the checkpoint's.
        steps += int(runners.get(NUM_ENV_STEPS_SAMPLED, 0))
        episodes += int(runners.get(NUM_EPISODES, 0))
        mean = runners.get(EPISODE_RETURN_MEAN)
        if mean is not None and math.isfinite(mean):
            # RLlib's mean over its last episodes; an iteration that ends
            # none reports none, and the last mean stands.
            mean_return = float(mean)
        now = time.monotonic()
        if now - last_time >= REPORT_EVERY_S or steps >= total:
            emit("progress", steps=steps, total_steps=total, episodes=episodes, mean_return=mean_return,
                 steps_per_second=(steps - last_steps) / max(now - last_time, 1e-9))
            last_time, last_steps = now, steps
        if next_checkpoint <= steps < total:
            _save(algo, workdir, steps, False, emit)
            next_checkpoint = (steps // every + 1) * every
    finished = not stop_requested()
    _save(algo, workdir, steps, finished, emit)
    if not finished:
        emit("log", message=f"stopped at {steps} steps; the policy is saved")
        algo.stop()
        return 0
    emit("log", message=f"trained {steps} steps in {time.monotonic() - started:.1f} s; evaluating")
    module = algo.get_module()
    result = evaluate(_policy(module), spec, int(spec.get("eval_episodes", 10)), True,
                      int(spec.get("seed", 0)))
    result["steps"] = steps
    emit("result", **result)
    algo.stop()
    return 0


def _policy(module):
    """``act(observations, deterministic)`` for a batch, from an RL module."""
    import numpy as np
    import torch

    dist_class = module.get_inference_action_dist_cls()

    def act(observations, deterministic: bool):
        with torch.no_grad():
            out = module.forward_inference({"obs": torch.as_tensor(np.asarray(observations, dtype=np.float32))})
            dist = dist_class.from_logits(out["action_dist_inputs"])
            if deterministic:
                dist = dist.to_deterministic()
            return dist.sample().numpy()

    return act


def load_policy(path: str, workdir: str):
    """A saved policy (a zipped RLlib checkpoint) as ``act``."""
    folder, _ = _unzipped(path, workdir)
    try:
        return _policy(_module_in(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
