"""Ant-v5 environment steps per second through Python, side by side in one
run: hanzo_twin's make_vec (embedded and remote) and make_pool, EnvPool
(sync and async), and Gymnasium's SyncVectorEnv and AsyncVectorEnv, each at
N environments, with the ratio to raw MuJoCo stepping on every core (the
limit, measured by the calling bench binary, benches/rl_vector_envs.rs).

Actions are drawn once ahead of time; no policy runs, so the figures are the
environments' own cost. Episodes that end are reset as each library does
(autoreset). Run it through cargo:

    cargo bench --features mujoco --bench rl_vector_envs
"""

import argparse
import os
import sys
import time
import warnings

import gymnasium as gym
import numpy as np

warnings.filterwarnings("ignore")


def timed(step, n, seconds, batch=None):
    """Env steps per second of `step()` (each call steps `batch` or `n` envs)."""
    per_call = batch or n
    for _ in range(3):  # warm up
        step()
    calls, t0 = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and calls >= 5:
            return calls * per_call / elapsed


def actions_for(n, rng):
    return rng.uniform(-1.0, 1.0, (64, n, 8)).astype(np.float32)


def sync_rate(envs, n, seconds, rng):
    """Env steps per second of a vector env stepping all `n` at once."""
    acts = actions_for(n, rng)
    i = [0]

    def step():
        envs.step(acts[i[0] % 64])
        i[0] += 1

    return timed(step, n, seconds)


def async_rate(pool, n, batch, seconds, rng):
    """Env steps per second of an EnvPool-style pool already reset
    asynchronously: receive whichever `batch` finish, send them on."""
    acts = actions_for(batch, rng)
    i = [0]

    def step():
        _, _, _, _, info = pool.recv()
        pool.send(acts[i[0] % 64], info["env_id"])
        i[0] += 1

    return timed(step, n, seconds, batch)


def hanzo_vec(n, seconds, rng, **kw):
    import hanzo_twin

    envs = hanzo_twin.make_vec("ant-v5", n, **kw)
    envs.reset(seed=0)
    rate = sync_rate(envs, n, seconds, rng)
    envs.close()
    return rate


def hanzo_pool(n, seconds, rng):
    import hanzo_twin

    batch = max(1, n // 2)
    pool = hanzo_twin.make_pool("ant-v5", n, batch)
    pool.async_reset(0)
    rate = async_rate(pool, n, batch, seconds, rng)
    pool.close()
    return rate


def envpool_run(n, seconds, rng, asynchronous):
    import envpool

    batch = max(1, n // 2) if asynchronous else n
    env = envpool.make("Ant-v5", env_type="gymnasium", num_envs=n, batch_size=batch, seed=0)
    if asynchronous:
        env.async_reset()
        rate = async_rate(env, n, batch, seconds, rng)
    else:
        env.reset()
        rate = sync_rate(env, n, seconds, rng)
    env.close()
    return rate


def gymnasium_run(n, seconds, rng, asynchronous):
    make = [lambda: gym.make("Ant-v5") for _ in range(n)]
    envs = gym.vector.AsyncVectorEnv(make) if asynchronous else gym.vector.SyncVectorEnv(make)
    envs.reset(seed=0)
    rate = sync_rate(envs, n, seconds, rng)
    envs.close()
    return rate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", default="2,8,32")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--raw", type=float, required=True, help="raw MuJoCo env-steps/s on all cores")
    p.add_argument("--url", help="a node for remote make_vec (HANZO_TWIN_TOKEN set)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.n.split(",")]
    runs = [
        ("hanzo_twin make_vec embedded (sync)", lambda n: hanzo_vec(n, args.seconds, rng)),
        ("hanzo_twin make_pool embedded (async)", lambda n: hanzo_pool(n, args.seconds, rng)),
        ("EnvPool (sync)", lambda n: envpool_run(n, args.seconds, rng, False)),
        ("EnvPool (async)", lambda n: envpool_run(n, args.seconds, rng, True)),
        ("Gymnasium SyncVectorEnv", lambda n: gymnasium_run(n, args.seconds, rng, False)),
        ("Gymnasium AsyncVectorEnv", lambda n: gymnasium_run(n, args.seconds, rng, True)),
    ]
    if args.url:
        runs.insert(2, ("hanzo_twin make_vec remote (sync)",
                        lambda n: hanzo_vec(n, args.seconds, rng, url=args.url)))
    cores = os.cpu_count()
    print(f"Ant-v5 env-steps/s on {cores} cores; raw MuJoCo limit {args.raw:.0f} (1.00)")
    print(f"{'':40}" + "".join(f"{'N=' + str(n):>18}" for n in sizes))
    results = {}
    for name, run in runs:
        row = []
        for n in sizes:
            rate = run(n)
            results[(name, n)] = rate
            row.append(f"{rate:>9.0f} ({rate / args.raw:.2f})")
        print(f"{name:40}" + "".join(f"{cell:>18}" for cell in row), flush=True)
    print("ratios the issue sets (>= 1.00 meets it):")
    for n in sizes:
        ours = results[("hanzo_twin make_vec embedded (sync)", n)]
        theirs = results[("EnvPool (sync)", n)]
        ours_a = results[("hanzo_twin make_pool embedded (async)", n)]
        theirs_a = results[("EnvPool (async)", n)]
        line = f"  N={n}: embedded/EnvPool sync {ours / theirs:.2f}, async {ours_a / theirs_a:.2f}"
        if args.url:
            remote = results[("hanzo_twin make_vec remote (sync)", n)]
            line += f"; remote/(1.5 x Gymnasium async) {remote / (1.5 * results[('Gymnasium AsyncVectorEnv', n)]):.2f}"
        print(line)
    if max(sizes) >= 32:
        print(f"  N=32: embedded within {1 - results[('hanzo_twin make_vec embedded (sync)', 32)] / args.raw:.1%} of the limit (target 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
