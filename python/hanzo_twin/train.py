"""The training worker a node's jobs run: Stable-Baselines3 on Hanzo Twin
environments, reporting to the node as JSON lines on stdout.

    python -m hanzo_twin.train --spec JSON --workdir DIR [--resume CHECKPOINT]
    python -m hanzo_twin.train --spec JSON --workdir DIR --policy POLICY

``--spec`` is the job's spec as the node stores it: ``kind`` (``train`` or
``evaluate``), the environment (``task`` or ``twin``, ``engine``,
``num_envs``, ``seed``), and for training ``algo`` (``ppo`` or ``sac``),
``total_steps``, ``hyperparameters``, ``checkpoint_every_steps`` and
``eval_episodes``; for evaluation ``episodes`` and ``deterministic``.

Each stdout line is one event: ``progress`` (steps, episodes, mean return of
the last episodes, steps per second), ``checkpoint`` (a policy saved in the
work folder, which the node keeps as an artifact), ``log`` and, last,
``result``. SIGTERM stops training at the next environment step; the policy
as it stands is saved first, so a cancelled job keeps what it learned.

Stable-Baselines3 is the trainer because it is the reference PyTorch
implementation RL users know (its PPO and SAC match published baselines, and
its saved policies load anywhere SB3 runs); it is installed with the
package's ``train`` extra.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections import deque

import hanzo_twin

#: Seconds between progress events.
REPORT_EVERY_S = 1.0
#: Episodes the progress's mean return is taken over.
RETURN_WINDOW = 20


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class _Stop:
    """Set by SIGTERM: training ends at the next step, saving first."""

    requested = False


def _on_sigterm(_signum, _frame) -> None:
    _Stop.requested = True


def env_kwargs(spec: dict) -> dict:
    """What ``hanzo_twin.make``/``make_vec`` take from a job's spec besides
    the task: its engine, and its twin (on the node reached through
    HANZO_TWIN_API / HANZO_TWIN_TOKEN unless ``url=`` says otherwise)."""
    kwargs = {}
    if spec.get("engine"):
        kwargs["engine"] = spec["engine"]
    if spec.get("twin"):
        kwargs["twin_id"] = spec["twin"]
    return kwargs


def _vec_env(spec: dict, n: int, seed: int):
    """The job's environments as one natively stepped batch."""
    from hanzo_twin.sb3 import make_vec_env

    return make_vec_env(spec.get("task"), n, seed=seed, **env_kwargs(spec))


def _hyperparameters(given: dict) -> dict:
    """SB3's constructor arguments; ``lin_<x>`` (rl-zoo's spelling) is a
    schedule from ``x`` down to 0 over the run."""
    out = {}
    for name, value in given.items():
        if isinstance(value, str) and value.startswith("lin_"):
            start = float(value[4:])
            value = lambda progress_remaining, start=start: progress_remaining * start  # noqa: E731
        out[name] = value
    return out


def _algo(name: str):
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}[name]


def _policy_for(env) -> str:
    import gymnasium as gym

    return "MultiInputPolicy" if isinstance(env.observation_space, gym.spaces.Dict) else "MlpPolicy"


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


def _reporter(workdir: str, total: int, checkpoint_every: int):
    from stable_baselines3.common.callbacks import BaseCallback

    class Reporter(BaseCallback):
        """Progress every second, a checkpoint every ``checkpoint_every``
        steps, and the stop SIGTERM asked for."""

        def __init__(self):
            super().__init__()
            self.returns = deque(maxlen=RETURN_WINDOW)
            self.episodes = 0
            self.last_report = time.monotonic()
            self.last_steps = 0
            self.next_checkpoint = 0

        def _on_training_start(self) -> None:
            self.last_steps = self.num_timesteps
            self.next_checkpoint = (self.num_timesteps // checkpoint_every + 1) * checkpoint_every

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                episode = info.get("episode")
                if episode is not None:
                    self.episodes += 1
                    self.returns.append(float(episode["r"]))
            now = time.monotonic()
            if now - self.last_report >= REPORT_EVERY_S:
                self.report(now)
            if self.num_timesteps >= self.next_checkpoint:
                save(self.model, workdir, self.num_timesteps)
                self.next_checkpoint += checkpoint_every
            return not _Stop.requested

        def report(self, now: float) -> None:
            rate = (self.num_timesteps - self.last_steps) / max(now - self.last_report, 1e-9)
            mean = sum(self.returns) / len(self.returns) if self.returns else None
            emit(
                "progress",
                steps=int(self.num_timesteps),
                total_steps=total,
                episodes=self.episodes,
                mean_return=_finite(mean),
                steps_per_second=_finite(rate),
            )
            self.last_report, self.last_steps = now, self.num_timesteps

    return Reporter()


def save(model, workdir: str, steps: int, final: bool = False) -> None:
    name = "policy-final.zip" if final else f"policy-{steps:012d}.zip"
    path = os.path.join(workdir, name)
    # Written aside and renamed, so the node never reads half a file.
    partial = os.path.join(workdir, f".saving-{name}")
    model.save(partial)
    os.replace(partial, path)
    emit("checkpoint", path=path, name=name, steps=int(steps), final=final)


def _evaluate_act(act, spec: dict, episodes: int, deterministic: bool, seed: int) -> dict:
    """The mean return of ``act(observations, deterministic)`` over
    ``episodes`` episodes of one environment of the job's task."""
    import numpy as np

    env = hanzo_twin.make(spec.get("task"), **env_kwargs(spec))
    returns, lengths = [], []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + 10_000 + episode)
            total, length, done = 0.0, 0, False
            while not done:
                action = act(np.asarray(obs)[None], deterministic)[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
        threshold = env.reward_threshold
    finally:
        env.close()
    return _summary(returns, lengths, threshold)


def _summary(returns, lengths, threshold) -> dict:
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
    result = {
        "mean_return": float(mean),
        "std_return": float(std),
        "episodes": len(returns),
        "mean_length": float(sum(lengths) / len(lengths)),
    }
    if threshold is not None:
        result["reward_threshold"] = float(threshold)
        result["solved"] = bool(mean >= threshold)
    return result


def _evaluate(model, spec: dict, episodes: int, deterministic: bool, seed: int) -> dict:
    from stable_baselines3.common.evaluation import evaluate_policy

    env = _vec_env(spec, 1, seed + 10_000)
    returns, lengths = evaluate_policy(
        model, env, n_eval_episodes=episodes, deterministic=deterministic, return_episode_rewards=True
    )
    threshold = env.get_attr("reward_threshold")[0]
    env.close()
    return _summary(returns, lengths, threshold)


def train(spec: dict, workdir: str, resume: str | None) -> int:
    import torch

    # Small policies: one thread leaves the other cores to the environments.
    torch.set_num_threads(1)
    seed = int(spec.get("seed", 0))
    total = int(spec["total_steps"])
    env = _vec_env(spec, int(spec.get("num_envs", 8)), seed)
    algo = _algo(spec.get("algo", "ppo"))
    if resume:
        model = algo.load(resume, env=env, seed=seed)
        emit("log", message=f"resumed from {os.path.basename(resume)} at {model.num_timesteps} steps")
    else:
        model = algo(_policy_for(env), env, seed=seed, verbose=0,
                     **_hyperparameters(spec.get("hyperparameters", {})))
    every = int(spec.get("checkpoint_every_steps") or max(total // 10, 1))
    reporter = _reporter(workdir, total, every)
    left = total - int(model.num_timesteps)
    started = time.monotonic()
    if left > 0:
        model.learn(total_timesteps=left, callback=reporter, reset_num_timesteps=False)
    reporter.report(time.monotonic())
    save(model, workdir, model.num_timesteps, final=not _Stop.requested)
    if _Stop.requested:
        emit("log", message=f"stopped at {model.num_timesteps} steps; the policy is saved")
        return 0
    emit("log", message=f"trained {model.num_timesteps} steps in {time.monotonic() - started:.1f} s; evaluating")
    result = _evaluate(model, spec, int(spec.get("eval_episodes", 10)), True, seed)
    result["steps"] = int(model.num_timesteps)
    emit("result", **result)
    env.close()
    return 0


def evaluate(spec: dict, policy: str, workdir: str) -> int:
    seed = int(spec.get("seed", 0))
    if spec.get("backend") == "rllib":
        from hanzo_twin import rllib

        act = rllib.load_policy(policy, workdir)
        emit("result", **_evaluate_act(act, spec, int(spec.get("episodes", 20)),
                                       bool(spec.get("deterministic", True)), seed))
        return 0
    algo = _algo(spec.get("algo", "ppo"))
    model = algo.load(policy, seed=seed)
    result = _evaluate(model, spec, int(spec.get("episodes", 20)), bool(spec.get("deterministic", True)), seed)
    emit("result", **result)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hanzo_twin.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="the job's spec, as JSON")
    parser.add_argument("--workdir", required=True, help="where policies are saved")
    parser.add_argument("--resume", help="train: a saved policy to continue from")
    parser.add_argument("--policy", help="evaluate: the saved policy")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    spec = json.loads(args.spec)
    try:
        if spec.get("kind") == "evaluate":
            if not args.policy:
                parser.error("evaluate needs --policy")
            return evaluate(spec, args.policy, args.workdir)
        if spec.get("backend") == "rllib":
            from hanzo_twin import rllib

            return rllib.train(spec, args.workdir, args.resume, emit, lambda: _Stop.requested, _evaluate_act)
        return train(spec, args.workdir, args.resume)
    except ModuleNotFoundError as e:
        extra = "rllib (ray[rllib])" if spec.get("backend") == "rllib" else "train (stable-baselines3, torch)"
        emit("error", message=f"{e.name} is not installed in {sys.executable}: install hanzo-twin[{extra}]")
        return 2
    except Exception as e:  # noqa: BLE001 - the node shows the worker's last words
        emit("error", message=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    sys.exit(main())
