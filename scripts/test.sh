#!/usr/bin/env bash
# Runs the whole Hanzo Twin test suite on a fresh machine: installs what the
# tests need (Debian packages, Python packages into ./.venv), then builds and
# tests every crate, example and benchmark (benchmarks run once, as tests).
#
#   scripts/test.sh            # everything
#   scripts/test.sh twins_api  # extra arguments filter the cargo tests
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

# Builds outlive the clone, so CI on the same machine reuses them.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hanzo-twin/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# Incremental caches grow to tens of GB across runs; CI rebuilds our crates
# whole instead.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

step() { printf '\n==> %s\n' "$*"; }

step "stale build artifacts"
# Old builds of every test binary pile up in the shared target folder.
[ -d "$CARGO_TARGET_DIR" ] && python3 scripts/prune_target.py "$CARGO_TARGET_DIR"

step "system packages"
need_apt=()
command -v cc >/dev/null && command -v g++ >/dev/null || need_apt+=(build-essential)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null || need_apt+=(npm)
# Loads the API in benches/state_throughput (run once as a test).
command -v wrk >/dev/null || need_apt+=(wrk)
# The MQTT broker live sync's tests run against (tests/sync.rs).
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
# The `kafka` feature builds librdkafka from source (rdkafka's cmake-build).
command -v cmake >/dev/null || need_apt+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need_apt+=(libcurl4-openssl-dev)
# librdkafka's TLS (stream.tls) links the system's OpenSSL.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
# A TLS front for the Kafka-protocol broker, which has none of its own
# (tests/sync.rs, a_twin_publishes_to_kafka_over_mutual_tls).
[ -x /usr/bin/stunnel4 ] || need_apt+=(stunnel4)
# ROS 2 peers (tests/sync.rs): Debian's Cyclone DDS 0.10.2 ships the DDS
# Security plugins SROS2 needs (PyPI's 11.0.1 wheel does not); the Python
# binding is built against it.
[ -f /usr/include/dds/dds.h ] || need_apt+=(cyclonedds-dev)
[ -x /usr/bin/idlc ] || need_apt+=(cyclonedds-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "missing system packages: ${need_apt[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi

step "python test peers (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# The cyclonedds binding builds against Debian's Cyclone, found through one
# prefix (pip keeps the built wheel in its cache).
cyclonedds_home=${XDG_CACHE_HOME:-$HOME/.cache}/hanzo-twin/cyclonedds-home
mkdir -p "$cyclonedds_home"
ln -sfn /usr/include "$cyclonedds_home/include"
ln -sfn "/usr/lib/$(gcc -dumpmachine)" "$cyclonedds_home/lib"
ln -sfn /usr/bin "$cyclonedds_home/bin"
CYCLONEDDS_HOME=$cyclonedds_home \
  .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
export HANZO_TWIN_TEST_PYTHON="$repo/.venv/bin/python"
# PyO3 (python/) builds against the venv's interpreter, under cargo and maturin alike.
export PYO3_PYTHON="$repo/.venv/bin/python"

step "MuJoCo library"
# The `mujoco` feature links libmujoco from PyPI's wheel; a copy outside the
# clone keeps the binaries' run path valid when the clone goes.
mujoco_lib=${XDG_CACHE_HOME:-$HOME/.cache}/hanzo-twin/mujoco-3.17.0/lib
mkdir -p "$mujoco_lib"
wheel_lib=$(.venv/bin/python -c 'import mujoco, os; print(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so.3.17.0"))')
cmp -s "$wheel_lib" "$mujoco_lib/libmujoco.so.3.17.0" || cp "$wheel_lib" "$mujoco_lib/"
ln -sf libmujoco.so.3.17.0 "$mujoco_lib/libmujoco.so"
export MUJOCO_DYNAMIC_LINK_DIR="$mujoco_lib"
# The ant-v5 RL task runs on Gymnasium's own model.
HANZO_TWIN_ANT_XML=$(.venv/bin/python -c 'import gymnasium.envs.mujoco as m, os; print(os.path.join(os.path.dirname(m.__file__), "assets", "ant.xml"))')
export HANZO_TWIN_ANT_XML

# PyBullet runs in worker processes of the venv's Python.
export HANZO_TWIN_PYBULLET_PYTHON="$repo/.venv/bin/python"

# PhysX builds from vendored C++ source; its build script wants clang++ on
# Linux unless CXX names another compiler.
command -v clang++ >/dev/null || export CXX=${CXX:-g++}

# Every optional engine and stream this machine can build.
features=mujoco,pybullet,physx,kafka,ros2,opcua,kubernetes

step "S3 test server (s3s-fs)"
# A real S3-protocol server for the object-storage tests, built once into the
# cache (0.14.1 is the newest that builds with this Rust).
tools=${XDG_CACHE_HOME:-$HOME/.cache}/hanzo-twin/tools
if [ ! -x "$tools/bin/s3s-fs" ]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools" --quiet
fi
export HANZO_TWIN_S3S_FS="$tools/bin/s3s-fs"
# promtool, from Debian's prometheus package, lints the node's /metrics
# (tests/twins_api.rs). Only the tool is unpacked: no Prometheus server is
# installed or started.
if [ ! -x "$tools/prometheus/usr/bin/promtool" ]; then
  (
    cd "$tools"
    rm -f prometheus_*.deb
    apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq && apt-get download -qq prometheus; }
    dpkg -x prometheus_*.deb prometheus
    rm -f prometheus_*.deb
  )
fi
export HANZO_TWIN_TEST_PROMTOOL="$tools/prometheus/usr/bin/promtool"

step "playwright-core (drives Chromium in the inspector test)"
npm_root=${XDG_CACHE_HOME:-$HOME/.cache}/hanzo-twin/npm
if [ ! -d "$npm_root/node_modules/playwright-core" ]; then
  mkdir -p "$npm_root"
  npm install --silent --no-audit --no-fund --prefix "$npm_root" playwright-core@1.64.1
fi
export HANZO_TWIN_PLAYWRIGHT="$npm_root/node_modules/playwright-core"

step "PostgreSQL on 127.0.0.1 (the shared metadata store)"
# A throwaway server for this run: trust auth on loopback only, stopped and
# removed on exit. PostgreSQL refuses to run as root, so root runs it as the
# postgres user the Debian package creates.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdata=$(mktemp -d "${TMPDIR:-/tmp}/hanzo-twin-pg.XXXXXX")
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$pgdata"
as_pg "$pgbin/initdb -D $pgdata -A trust -U postgres -E UTF8 --no-sync" >/dev/null
pgport=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$pgbin/pg_ctl -D $pgdata -l $pgdata/server.log -w -o '-h 127.0.0.1 -p $pgport -k $pgdata -F' start" >/dev/null
trap 'as_pg "$pgbin/pg_ctl -D $pgdata -m fast -w stop" >/dev/null 2>&1; rm -rf "$pgdata"' EXIT
export HANZO_TWIN_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pgport/postgres"

step "format"
cargo fmt --all -- --check

step "hanzo_twin Python package"
# Built optimized (the RL benchmark measures it) into the venv, with MuJoCo.
VIRTUAL_ENV="$repo/.venv" .venv/bin/maturin develop --release --locked --quiet \
  -m python/Cargo.toml --features mujoco

step "lint"
cargo clippy --workspace --all-targets --locked --features "$features" -- -D warnings

step "tests"
cargo test --workspace --all-targets --locked --features "$features" "$@"
cargo test --workspace --doc --locked --features "$features"
