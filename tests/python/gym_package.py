"""The hanzo_twin Python package against Gymnasium's own checks and
Stable-Baselines3, run by tests/python_package.rs:

    python tests/python/gym_package.py embedded
    python tests/python/gym_package.py remote URL      (HANZO_TWIN_TOKEN set)
    python tests/python/gym_package.py ppo
    python tests/python/gym_package.py spec TWIN       (HANZO_TWIN_API, HANZO_TWIN_TOKEN set)

Each check asserts; any failure exits non-zero with the traceback.
"""

import os
import socket
import sys
import warnings

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import hanzo_twin
from hanzo_twin import _native

# Unbounded observation spaces are what Gymnasium's MuJoCo tasks declare too.
warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum).*")


def run_until_an_episode_ends(env, actions, limit=400):
    for _ in range(limit):
        out = env.step(actions)
        if out[2].any():
            return out
    raise AssertionError("no episode ended")


def check_single_env(**kw):
    env = hanzo_twin.make("cartpole-v0", **kw)
    check_env(env, skip_render_check=True)
    assert env.observation_space.dtype == np.float64 and env.observation_space.shape == (4,)
    assert env.action_space.dtype == np.float32 and env.action_space.shape == (1,)
    obs, info = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    assert np.array_equal(obs, again), "a seed reproduces the episode"
    steps, terminated = 0, False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(np.zeros(1, dtype=np.float32))
        assert reward == 1.0 and not truncated
        steps += 1
    assert abs(obs[2]) > 0.2095 and steps < 200, (obs, steps)
    env.close()


def check_vector_env(**kw):
    # NEXT_STEP (the default): the step after the end resets, reward 0.
    envs = hanzo_twin.make_vec("cartpole-v0", 4, **kw)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.observation_space.shape == (4, 4) and envs.action_space.shape == (4, 1)
    obs, info = envs.reset(seed=3)
    zeros = np.zeros((4, 1), dtype=np.float32)
    obs, reward, terminated, truncated, info = run_until_an_episode_ends(envs, zeros)
    i = int(np.flatnonzero(terminated)[0])
    assert abs(obs[i, 2]) > 0.2095
    obs, reward, terminated, truncated, info = envs.step(np.ones((4, 1), dtype=np.float32))
    assert reward[i] == 0.0 and not terminated[i] and abs(obs[i, 2]) <= 0.05 + 1e-6
    assert abs(obs[i, 1]) <= 0.05 + 1e-6, "the reset step's push is not applied"
    envs.close()

    # SAME_STEP: the final observation rides in info beside the first of the next.
    envs = hanzo_twin.make_vec("cartpole-v0", 4, autoreset_mode=AutoresetMode.SAME_STEP, **kw)
    envs.reset(seed=3)
    obs, reward, terminated, truncated, info = run_until_an_episode_ends(envs, zeros)
    i = int(np.flatnonzero(terminated)[0])
    assert info["_final_obs"][i] and abs(info["final_obs"][i][2]) > 0.2095
    assert abs(obs[i, 2]) <= 0.05 + 1e-6 and reward[i] == 1.0
    assert info["final_info"]["_reward_alive"][i]
    envs.close()

    # DISABLED: reset_mask restarts only the ended ones.
    envs = hanzo_twin.make_vec("cartpole-v0", 2, autoreset_mode="disabled", **kw)
    envs.reset(seed=3)
    obs, reward, terminated, truncated, info = run_until_an_episode_ends(envs, np.zeros((2, 1)))
    mask = terminated | truncated
    obs2, info = envs.reset(options={"reset_mask": mask})
    assert np.array_equal(obs2[~mask], obs[~mask]) and not np.array_equal(obs2[mask], obs[mask])
    envs.close()

    # Seeding reproduces whole trajectories, autoresets included.
    def trace(seed):
        envs = hanzo_twin.make_vec("cartpole-v0", 3, **kw)
        obs, _ = envs.reset(seed=seed)
        rows = [obs]
        rng = np.random.default_rng(0)
        for _ in range(150):
            obs, *_ = envs.step(rng.uniform(-1, 1, (3, 1)).astype(np.float32))
            rows.append(obs)
        envs.close()
        return np.stack(rows)

    a, b, c = trace(9), trace(9), trace(10)
    assert np.array_equal(a, b) and not np.array_equal(a, c)

    # Domain randomization is reported per environment in info.
    envs = hanzo_twin.make_vec(
        "cartpole-v0", 3,
        domain_randomization={"enabled": True, "parameters": {"mass_scale": {"min": 0.5, "max": 1.5},
                                                              "actuator_delay_ms": {"min": 0, "max": 20}}},
        **kw,
    )
    _, info = envs.reset(seed=1)
    scales = [p["mass_scale"] for p in info["randomization"]]
    assert all(0.5 <= s <= 1.5 for s in scales) and len(set(scales)) == 3, scales
    envs.close()

    # Errors name the problem.
    try:
        hanzo_twin.make_vec("walker-v9", 2, **kw)
    except (ValueError, hanzo_twin.RemoteError) as e:
        assert "walker-v9" in str(e), e
    else:
        raise AssertionError("an unknown task is refused")


def check_pool(**kw):
    pool = hanzo_twin.make_pool("cartpole-v0", 6, 3, **kw)
    pool.async_reset(0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = pool.recv()
        assert obs.shape == (3, 4) and len(info["env_id"]) == 3
        pool.send(np.zeros((3, 1), dtype=np.float32), info["env_id"])
    # Which environments finish first depends on thread scheduling, so the
    # loop above may never see a slow one; what the pool guarantees is that
    # every environment in flight comes back exactly once. All six are in
    # flight now: two batches drain them.
    drained = [int(i) for _ in range(2) for i in pool.recv()[4]["env_id"]]
    assert sorted(drained) == list(range(6)), drained
    pool.close()


def check_pictures(**kw):
    """``render_mode="rgb_array"``: the environment as it is now, drawn the
    same for the same state; Gymnasium's checker passes its render check."""
    env = hanzo_twin.make("cartpole-v0", render_mode="rgb_array", width=96, height=72, **kw)
    check_env(env)
    env.reset(seed=7)
    first = env.render()
    assert first.shape == (72, 96, 3) and first.dtype == np.uint8, (first.shape, first.dtype)
    assert first.std() > 5, "a picture, not a flat colour"
    for _ in range(15):
        if env.step(np.ones(1, dtype=np.float32))[2]:
            break  # the pole fell; the cart has moved by then
    moved = env.render()
    assert (moved != first).any(axis=2).mean() > 0.005, "the cart moved in the picture"
    twin = hanzo_twin.make("cartpole-v0", render_mode="rgb_array", width=96, height=72, **kw)
    twin.reset(seed=7)
    assert np.array_equal(twin.render(), first), "the same state draws the same bytes"
    twin.close()
    env.close()
    quiet = hanzo_twin.make("cartpole-v0", **kw)
    quiet.reset(seed=0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert quiet.render() is None
    quiet.close()
    envs = hanzo_twin.make_vec("cartpole-v0", 3, render_mode="rgb_array", width=32, height=24, **kw)
    envs.reset(seed=1)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 3, type(frames)
    assert all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in frames)
    envs.close()
    for bad, field in (({"render_mode": "human"}, "render_mode"), ({"width": 0}, "width")):
        try:
            hanzo_twin.make("cartpole-v0", **bad, **kw)
        except ValueError as e:
            assert str(e).startswith(field), e
        else:
            raise AssertionError(f"{bad} is refused")
    return first


def embedded():
    check_single_env()
    check_vector_env()
    check_pool()
    check_pictures()
    # Gymnasium's registry: the render mode passes through (and its list form).
    listed = gym.make("HanzoTwin/CartPole-v0", render_mode="rgb_array_list")
    listed.reset(seed=0)
    listed.step(np.zeros(1, dtype=np.float32))
    frames = listed.render()
    assert len(frames) == 2 and frames[0].ndim == 3, len(frames)
    listed.close()
    if _native.MUJOCO:
        env = hanzo_twin.make("ant-v5")
        check_env(env, skip_render_check=True)
        assert env.observation_space.shape == (105,) and env.action_space.shape == (8,)
        # Same reward terms and info as Gymnasium's Ant-v5.
        ours = set(env.reset(seed=0)[1])
        theirs = set(gym.make("Ant-v5").reset(seed=0)[1])
        assert theirs <= ours, theirs - ours
        envs = hanzo_twin.make_vec("ant-v5", 4)
        obs, _ = envs.reset(seed=0)
        obs, reward, *_ = envs.step(np.zeros((4, 8), dtype=np.float32))
        assert obs.shape == (4, 105) and np.isfinite(reward).all()
        # Drawn from its MuJoCo geoms: a view that follows the ant, and the
        # model's own tracking camera.
        ant = hanzo_twin.make("ant-v5", render_mode="rgb_array", width=64, height=64)
        ant.reset(seed=0)
        start = ant.render()
        tracked = ant.unwrapped._backend.render(0, "track", 64, 64)
        assert start.std() > 5 and tracked.std() > 5, (start.std(), tracked.std())
        rng = np.random.default_rng(0)
        for _ in range(20):
            if ant.step(rng.uniform(-1, 1, 8).astype(np.float32))[2]:
                break  # fell over: it has moved by then
        assert (ant.render() != start).any(axis=2).mean() > 0.005, "the legs moved in the picture"
        try:
            ant.unwrapped._backend.render(0, "no-such-camera", 8, 8)
        except ValueError as e:
            assert "no-such-camera" in str(e), e
        else:
            raise AssertionError("an unknown camera is refused")
        ant.close()
    else:
        print("SKIPPED: this hanzo_twin build has no MuJoCo; ant-v5 not checked", file=sys.stderr)
    print("embedded: ok")


def remote(url):
    check_single_env(url=url)
    check_vector_env(url=url)
    check_pool(url=url)
    # A node draws what this process draws for the same state.
    assert np.array_equal(check_pictures(url=url), check_pictures()), "node and embedded pictures differ"
    # The node steps exactly what the embedded batch steps.
    local = hanzo_twin.make_vec("cartpole-v0", 3)
    node = hanzo_twin.make_vec("cartpole-v0", 3, url=url)
    a, _ = local.reset(seed=4)
    b, _ = node.reset(seed=4)
    rng = np.random.default_rng(1)
    for _ in range(100):
        assert np.array_equal(a, b)
        act = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
        a, ra, *_ = local.step(act)
        b, rb, *_ = node.step(act)
        assert np.array_equal(ra, rb)
    node.close()
    # What goes wrong on the way to a node says what it is.
    try:
        hanzo_twin.make_vec("cartpole-v0", 2, url="ftp://127.0.0.1:1")
    except ValueError as e:
        assert str(e).startswith("url:"), e
    else:
        raise AssertionError("an ftp url is refused")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once it is closed
    try:
        hanzo_twin.make_vec("cartpole-v0", 2, url=f"http://127.0.0.1:{closed}")
    except ConnectionError as e:
        assert "did not answer" in str(e), e
    else:
        raise AssertionError("a port with nothing listening is an error")
    try:
        hanzo_twin.make_vec("cartpole-v0", 2, url=url, token="not-a-token")
    except hanzo_twin.RemoteError as e:
        assert e.status == 401, e
    else:
        raise AssertionError("a bad token is refused")
    print("remote: ok")


def ppo():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    import torch

    torch.set_num_threads(1)
    train = make_vec_env(lambda: hanzo_twin.make("cartpole-v0"), n_envs=4, seed=0)
    model = PPO("MlpPolicy", train, n_steps=256, batch_size=64, learning_rate=1e-3, seed=0, verbose=0)
    evaluation = Monitor(hanzo_twin.make("cartpole-v0"))
    before, _ = evaluate_policy(model, evaluation, n_eval_episodes=10, deterministic=True)
    model.learn(total_timesteps=20_000)
    after, _ = evaluate_policy(model, evaluation, n_eval_episodes=10, deterministic=True)
    print(f"ppo: mean return {before:.1f} before, {after:.1f} after 20k steps")
    assert after >= 2 * before and after >= 100, (before, after)


def spec(twin):
    """The spec's RL section, its names as written; the node comes from
    HANZO_TWIN_API and HANZO_TWIN_TOKEN."""
    from stable_baselines3 import PPO

    import torch

    torch.set_num_threads(1)
    env = hanzo_twin.make(
        twin_id=twin,
        engine="mujoco",
        obs_type="dict",        # Joint positions + camera images
        action_type="joint",    # Joint-level torque commands
        step_hz=60,
        domain_randomization=True,
    )
    # What each argument did: the twin's joints, named parts, torques, 60 Hz.
    assert env.engine == "mujoco", env.engine
    assert isinstance(env.observation_space, gym.spaces.Dict), env.observation_space
    parts = env.observation_space.spaces
    eye = "rgb:/World/Camera"
    assert set(parts) == {"joint_position", "joint_velocity", eye}, parts
    assert parts[eye].shape == (84, 84, 3) and parts[eye].dtype == np.uint8, parts[eye]
    joints = parts["joint_position"].shape[0]
    assert joints >= 2 and parts["joint_velocity"].shape == (joints,), parts
    assert env.action_space.shape == (joints,), env.action_space
    spec_info = env._backend.spec
    assert abs(spec_info["dt"] - 1 / 60) < 1e-9, spec_info["dt"]
    assert spec_info["twin_id"], spec_info
    check_env(env.unwrapped, skip_render_check=True)

    agent = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, seed=0, verbose=0)
    agent.learn(total_timesteps=128)

    # Standard Gymnasium loop (shortened from the spec's 100_000 steps).
    obs, info = env.reset()
    moved = False
    first = obs["joint_position"].copy()
    for step in range(200):
        action, _ = agent.predict(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs), obs
        moved = moved or not np.allclose(obs["joint_position"], first)
        if terminated or truncated:
            obs, info = env.reset()
    assert moved, "torques on the joints move them"
    env.close()

    # The camera image is the picture: the control task's observation, the
    # environment's render() and the twin's own GET /render of the same
    # (authored) state agree byte for byte.
    seen = hanzo_twin.make(twin_id=twin, obs_type="dict", render_mode="rgb_array", width=84, height=84,
                           camera_name="/World/Camera")
    obs, _ = seen.reset()
    image = obs[eye]
    assert image.std() > 5, "a picture, not a flat colour"
    assert np.array_equal(seen.render(), image)
    import urllib.request

    request = urllib.request.Request(
        f"{os.environ['HANZO_TWIN_API'].rstrip('/')}/v1/twins/{twin}/render?camera=/World/Camera&width=84&height=84",
        headers={"Authorization": f"Bearer {os.environ['HANZO_TWIN_TOKEN']}"})
    with urllib.request.urlopen(request) as answer:
        assert np.array_equal(_native.rgb_png_array(answer.read()), image), "the twin draws the same"
    seen.close()
    joints_only = hanzo_twin.make(twin_id=twin, obs_type="dict", camera_size=None)
    assert set(joints_only.observation_space.spaces) == {"joint_position", "joint_velocity"}
    joints_only.close()

    # Parallel environments for vectorized RL
    envs = hanzo_twin.make_vec(
        twin_id=twin,
        engine="mujoco",
        num_envs=64,           # 64 parallel simulations
        num_envs_per_worker=8, # 8 envs per CPU core
    )
    assert envs.num_envs == 64 and envs._backend.spec["threads"] == 8, envs._backend.spec
    obs, _ = envs.reset(seed=0)
    obs, *_ = envs.step(envs.action_space.sample())
    assert obs.shape == (64, 2 * joints), obs.shape
    envs.close()

    # The same through Gymnasium's registry.
    single = gym.make("HanzoTwin/Twin-v0", twin_id=twin, action_type="joint_position")
    assert single.unwrapped._backend.spec["twin_id"], single.unwrapped._backend.spec
    single.reset(seed=1)
    single.step(single.action_space.sample())
    single.close()
    vec = gym.make_vec("HanzoTwin/CartPole-v0", num_envs=4, vectorization_mode="vector_entry_point")
    assert isinstance(vec, hanzo_twin.HanzoTwinVectorEnv), type(vec)
    vec.reset(seed=0)
    vec.close()
    cart = gym.make("HanzoTwin/CartPole-v0")
    cart.reset(seed=0)
    cart.close()

    # What is wrong says which argument.
    for kwargs, field in (({"obs_type": "image"}, "obs_type"), ({"action_type": "joint_jerk"}, "action_type"),
                          ({"step_hz": 7}, "step_hz")):
        try:
            hanzo_twin.make(twin_id=twin, **kwargs)
        except (ValueError, hanzo_twin.RemoteError) as e:
            assert field in str(e), (field, e)
        else:
            raise AssertionError(f"{kwargs} is refused")
    saved = os.environ.pop("HANZO_TWIN_API")
    try:
        hanzo_twin.make(twin_id=twin)
    except ValueError as e:
        assert "HANZO_TWIN_API" in str(e), e
    else:
        raise AssertionError("twin_id without a node is refused")
    finally:
        os.environ["HANZO_TWIN_API"] = saved
    print("spec: ok")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "embedded":
        embedded()
    elif mode == "remote":
        remote(sys.argv[2])
    elif mode == "ppo":
        ppo()
    elif mode == "spec":
        spec(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {mode}")
