#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the end-to-end demo from a build's bin/ folder (make demo).
#
# A prefill process and a decode process (forked) move a toy model's KV
# cache through libflowkv; the decode side's output must equal a colocated
# run token for token. First with FlowKV pools on both sides (one op per
# request), then into a vLLM-style layer-major HND pool, layer by layer.
set -euo pipefail
bin=${1:-build/bin}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}

echo "== disaggregated prefill -> decode, block-major pools on both sides"
"$bin/disagg_demo"
echo
echo "== the same into a layer-major HND decode pool, streamed layer by layer"
"$bin/disagg_demo" --decode_layout=layer_major_hnd --layerwise
echo
echo "== a block manager's view of the allocator"
"$bin/allocator_example"
