#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: lint, then pytest. eBPF tests need root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m ruff check .
python3 -m pytest -q "$@"
if [ $# -eq 0 ]; then
    # The recording and replay tests against real memcached and real clients once more on the Python
    # specification: the compiled twins run by default, and both must give memcached's own counts.
    MEMBENCH_NO_EXTENSIONS=1 python3 -m pytest -q tests/record tests/fidelity tests/capture/test_live.py \
        tests/replay --ignore tests/record/test_twin.py --ignore tests/record/test_twin_capture.py \
        --ignore tests/record/test_fuzz_rows.py --ignore tests/replay/test_cluster.py
fi
