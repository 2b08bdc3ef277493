# syntax=docker/dockerfile:1
# The node's image: `docker build -t hanzoai/twin .`, run as in compose.yml.
# Built with MuJoCo (its library comes from PyPI's wheel: mujoco-rs 7.0.0 is
# built for exactly MuJoCo 3.17.0, so the pair is pinned).
# A node that also runs training jobs (Stable-Baselines3, RLlib on Ray) adds
# Python and the hanzo_twin package: `docker build --target trainer -t
# hanzoai/twin:trainer .` (several GB more: PyTorch ships CUDA's libraries).

FROM rust:1.95-bookworm AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/mujoco-wheel \
 && /opt/mujoco-wheel/bin/pip install --no-cache-dir mujoco==3.17.0 \
 && mkdir -p /opt/mujoco/lib \
 && cp /opt/mujoco-wheel/lib/python3*/site-packages/mujoco/libmujoco.so.3.17.0 /opt/mujoco/lib/ \
 && ln -s libmujoco.so.3.17.0 /opt/mujoco/lib/libmujoco.so
ENV MUJOCO_DYNAMIC_LINK_DIR=/opt/mujoco/lib
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features mujoco,kubernetes --bin hanzo-twin

# The hanzo_twin wheel: Gymnasium environments stepped in Rust, the trainer.
FROM build AS python-wheel
RUN /opt/mujoco-wheel/bin/pip install --no-cache-dir maturin==1.16.0 \
 && /opt/mujoco-wheel/bin/maturin build --release --locked -m python/Cargo.toml \
      --features mujoco --interpreter /usr/bin/python3 -o /wheels

FROM debian:bookworm-slim AS node
RUN groupadd --system --gid 10001 twin \
 && useradd --system --uid 10001 --gid twin --home-dir /var/lib/hanzo-twin --shell /usr/sbin/nologin twin \
 && mkdir -p /var/lib/hanzo-twin /etc/hanzo-twin/jwt \
 && chown twin:twin /var/lib/hanzo-twin
COPY --from=build /opt/mujoco/lib/libmujoco.so.3.17.0 /usr/local/lib/
RUN ldconfig
COPY --from=build /src/target/release/hanzo-twin /usr/local/bin/hanzo-twin
COPY configs/scenes /usr/share/hanzo-twin/scenes
COPY deploy/config.yaml /etc/hanzo-twin/config.yaml
USER 10001:10001
WORKDIR /var/lib/hanzo-twin
VOLUME ["/var/lib/hanzo-twin"]
# The API, the metrics, the cluster port (between nodes only).
EXPOSE 8082 9090 7946
# /alive: the twin host answers. No curl in the image: bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8082 && printf 'GET /alive HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/hanzo-twin"]
CMD ["serve", "--config", "/etc/hanzo-twin/config.yaml"]

# The node with a Python for its training jobs (scheduler.python): the
# hanzo_twin package with its train (Stable-Baselines3) and rllib (Ray)
# extras, in a venv of the image's own Python.
FROM node AS trainer
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY --from=python-wheel /wheels /tmp/wheels
RUN python3 -m venv /opt/hanzo-twin-python \
 && wheel=$(ls /tmp/wheels/hanzo_twin-*.whl) \
 && /opt/hanzo-twin-python/bin/pip install --no-cache-dir "${wheel}[train,rllib]" \
 && rm -rf /tmp/wheels
ENV HANZO_TWIN_SCHEDULER_PYTHON=/opt/hanzo-twin-python/bin/python
USER 10001:10001

# The default target: the node alone.
FROM node
