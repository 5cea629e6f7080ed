#!/usr/bin/env bash
# Runs the end-to-end examples from a build's bin/ folder (make demo).
set -euo pipefail
bin=${1:-build/bin}
echo "== allocator: a block manager's view"
"$bin/allocator_example"
