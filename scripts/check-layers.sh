#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks the layering of lib/ (docs/architecture.md, "Layers"): each folder
# may include only the internal headers of the folders listed for it, and
# lib/kv/ reaches the engine only through its one named door
# (lib/engine/engine_internal.h), never a UCX header. Public headers
# (include/flowkv/) include no internal header. Run by `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."

# folder -> internal header prefixes it may include (besides its own).
declare -A allowed=(
  [lib/common]=""
  [lib/layout]="lib/common/"
  [lib/allocator]="lib/common/"
  [lib/scheduler]="lib/common/"
  [lib/sim]="lib/common/"
  [lib/engine]="lib/common/"
  [lib/pool]="lib/common/"
  [lib/kv]="lib/common/ lib/engine/engine_internal.h"
  [lib/c_api]="lib/common/"
  [lib/telemetry]="lib/common/tsan_lock.h"
  [cuda]="lib/common/ lib/layout/pack_buffer.h"
)
# folder -> system headers it must not include (a regex).
declare -A forbidden_system=(
  [lib/kv]='^(ucp|ucs|uct)/'
  [lib/layout]='^(ucp|ucs|uct|openssl)/'
  [lib/allocator]='^(ucp|ucs|uct|openssl)/'
  [lib/scheduler]='^(ucp|ucs|uct|openssl)/'
  [lib/sim]='^(ucp|ucs|uct|openssl)/'
  [lib/pool]='^(ucp|ucs|uct|openssl)/'
)

errors=0
complain() { echo "check-layers: $1" >&2; errors=$((errors + 1)); }

for folder in "${!allowed[@]}"; do
  [ -d "$folder" ] || continue
  while IFS= read -r file; do
    while IFS= read -r header; do
      [ -n "$header" ] || continue
      case "$header" in "$folder"/*) continue ;; esac
      ok=0
      for prefix in ${allowed[$folder]}; do
        case "$header" in "$prefix"*) ok=1 ;; esac
      done
      [ $ok -eq 1 ] || complain "$file includes $header (${folder} may include: ${allowed[$folder]:-only its own})"
    done < <(sed -nE 's@^#include "(lib/[^"]+)".*@\1@p' "$file")
    if [ -n "${forbidden_system[$folder]:-}" ]; then
      while IFS= read -r header; do
        [ -n "$header" ] || continue
        if [[ "$header" =~ ${forbidden_system[$folder]} ]]; then
          complain "$file includes <$header> (not allowed in $folder)"
        fi
      done < <(sed -nE 's@^#include [<"]([^>"]+)[>"].*@\1@p' "$file")
    fi
  done < <(git ls-files "$folder" | grep -E '\.(h|cc|cu|cuh)$')
done

while IFS= read -r file; do
  if grep -qE '^#include "lib/' "$file"; then
    complain "public header $file includes an internal header"
  fi
done < <(git ls-files 'include/flowkv/*.h' 'include/flowkv/**/*.h')

if [ $errors -gt 0 ]; then
  echo "check-layers: $errors violation(s)" >&2
  exit 1
fi
echo "layers: ok"
