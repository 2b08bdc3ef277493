"""Ant-v5 environment steps per second through Python, side by side in one
run: hanzo_twin's make_vec (embedded and remote) and make_pool, EnvPool
(sync and async), and Gymnasium's SyncVectorEnv and AsyncVectorEnv, each at
N environments, with the ratio to raw MuJoCo stepping on every core (the
limit). The calling bench binary (benches/rl_vector_envs.rs) measures the
limit when this script prints ``raw?``. Each library steps in a few rounds
with a measurement of the limit before and after each; a round's ratio is
against the mean of its two, and a cell reports the medians over its rounds,
so the VM's drift over the run does not pass for a difference between
libraries.

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


LIMITS = []  # every measurement of the limit, for the summary
ROUNDS = 4  # rounds per cell (--rounds)


def raw_limit():
    """Raw MuJoCo env-steps/s on every core, measured now by the bench binary
    (it answers on stdin; this process idles meanwhile)."""
    print("raw?", flush=True)
    rate = float(sys.stdin.readline())
    LIMITS.append(rate)
    return rate


def timed(step, n, seconds, batch=None):
    """Env steps per second of `step()` (each call steps `batch` or `n` envs)
    and its ratio to the limit, medians over ROUNDS rounds of `seconds`."""
    per_call = batch or n
    for _ in range(3):  # warm up
        step()
    rates, ratios = [], []
    before = raw_limit()
    for _ in range(ROUNDS):
        calls, t0 = 0, time.perf_counter()
        while True:
            step()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds and calls >= 5:
                break
        after = raw_limit()
        rates.append(calls * per_call / elapsed)
        ratios.append(rates[-1] / ((before + after) / 2))
        before = after
    return float(np.median(rates)), float(np.median(ratios))


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
    p.add_argument("--seconds", type=float, default=1.0, help="seconds a round steps")
    p.add_argument("--rounds", type=int, default=4, help="rounds per cell")
    p.add_argument("--url", help="a node for remote make_vec (HANZO_TWIN_TOKEN set)")
    args = p.parse_args()
    global ROUNDS
    ROUNDS = args.rounds
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
    print(f"Ant-v5 env-steps/s on {cores} cores (ratio to raw MuJoCo stepping on every core,")
    print(f"measured around each of {ROUNDS} rounds of {args.seconds:g} s; medians)")
    print(f"{'':40}" + "".join(f"{'N=' + str(n):>18}" for n in sizes))
    ratios = {}
    for name, run in runs:
        row = []
        for n in sizes:
            rate, ratio = run(n)
            ratios[(name, n)] = ratio
            row.append(f"{rate:>9.0f} ({ratio:.2f})")
        print(f"{name:40}" + "".join(f"{cell:>18}" for cell in row), flush=True)
    print(f"raw MuJoCo limit over the run: {min(LIMITS):.0f} to {max(LIMITS):.0f}, "
          f"median {float(np.median(LIMITS)):.0f} env-steps/s")
    # Library against library through their ratios to the limit, which take
    # out the drift between the two cells' times.
    print("ratios the issue sets (>= 1.00 meets it):")
    for n in sizes:
        ours = ratios[("hanzo_twin make_vec embedded (sync)", n)]
        theirs = ratios[("EnvPool (sync)", n)]
        ours_a = ratios[("hanzo_twin make_pool embedded (async)", n)]
        theirs_a = ratios[("EnvPool (async)", n)]
        line = f"  N={n}: embedded/EnvPool sync {ours / theirs:.2f}, async {ours_a / theirs_a:.2f}"
        if args.url:
            remote = ratios[("hanzo_twin make_vec remote (sync)", n)]
            line += f"; remote/(1.5 x Gymnasium async) {remote / (1.5 * ratios[('Gymnasium AsyncVectorEnv', n)]):.2f}"
        print(line)
    if max(sizes) >= 32:
        sync = ratios[("hanzo_twin make_vec embedded (sync)", 32)]
        pool = ratios[("hanzo_twin make_pool embedded (async)", 32)]
        print(f"  N=32: embedded at {sync:.2f} (sync) and {pool:.2f} (async) of the limit (target: 0.95 or more)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
