#!/usr/bin/env bash
# The benchmark suite in one command: installs what it needs, runs, writes bench-results/ and
# docs/benchmarks.md + docs/benchmarks.png.
#
#   bench/run.sh            # full suite: five runs each, workloads up to 1M events, the soak (100,000
#                           # threads on one connection), follow (1,000 and 10,000 files), the 1 GB
#                           # sessions archive (import, usage, daily replay --state-dir): ~35-40 min
#                           # on 2 cores, plus ~5 min to generate workloads and archives not cached
#   bench/run.sh --smoke    # everything tiny (10k events, one run), < 60 s; asserts no target
#   bench/run.sh --only throughput,sqlite --runs 3
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools: taskset (util-linux) pins the daemon to core 0; ps/free/lscpu describe the machine.
need_apt=()
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v ps >/dev/null || need_apt+=(procps)
command -v free >/dev/null || need_apt+=(procps)
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "bench: missing ${need_apt[*]} (the suite still runs, unpinned)" >&2
  fi
fi

# Python: the project's venv with the bench extras (matplotlib, py-spy) for the harness, and the
# daemon as users install it, compiled (.venv-compiled, rebuilt when a source changed).
scripts/bootstrap --compiled

exec .venv/bin/python -m bench "$@"
