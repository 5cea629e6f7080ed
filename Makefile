# SPDX-License-Identifier: Apache-2.0
# Thin wrapper over the CMake presets (CMakePresets.json).
#
#   make demo                 install deps, build Release, run the end-to-end example
#   make test                 install deps, build, run the tests (not the long
#                             ones labelled "reliability")
#   make test SANITIZE=address   ... under ASan + UBSan (build-asan/)
#   make test SANITIZE=thread    ... under TSan (build-tsan/)
#   make reliability          build Release, run the "reliability" tests: kill
#                             points over many seeds, 60 s soaks, namespaces
#                             (docs/reliability.md; about 5 minutes)
#   make bench                build and run the benchmarks
#   make bench-report         run the benchmarks with a same-run comparison and
#                             rewrite README.md's generated tables (minutes)
#   make cluster-experiments  the live-cluster tables and figures of
#                             docs/cluster.md (flowkv-cluster; minutes)
#   make validate-sim         the simulator against the live cluster, per
#                             policy (scripts/validate-sim.sh; minutes)
#   make fuzz [FUZZ_SECONDS=60]   every libFuzzer target (clang, build-fuzz/)
#   make format | format-check
#   make lint [TIDY=1]        the layering rules (scripts/check-layers.sh);
#                             TIDY=1 adds clang-tidy over lib/

SANITIZE ?=
JOBS ?= $(shell nproc)
PRESET := $(if $(filter address,$(SANITIZE)),asan,$(if $(filter thread,$(SANITIZE)),tsan,release))
BUILD_DIR := $(if $(filter release,$(PRESET)),build,build-$(PRESET))
BIN := $(BUILD_DIR)/bin
# Benchmarks and examples that use UCX stay on loopback.
export UCX_NET_DEVICES ?= lo

SOURCES = $(shell git ls-files '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null)

.PHONY: deps configure build demo test reliability bench bench-report cluster-experiments validate-sim fuzz format format-check lint clean

deps:
	@scripts/install-deps.sh

configure: deps
	@if [ "$(SANITIZE)" != "" ] && [ "$(PRESET)" = "release" ]; then \
	  echo "SANITIZE must be 'address' or 'thread'"; exit 2; fi
	cmake --preset $(PRESET)

build: configure
	cmake --build --preset $(PRESET) -j $(JOBS)

# Only what the demo runs (not every test, benchmark and the Python module).
DEMO_TARGETS = disagg_demo allocator_example

demo: configure
	cmake --build --preset $(PRESET) -j $(JOBS) --target $(DEMO_TARGETS)
	scripts/demo.sh $(BIN)

test: build
	ctest --preset $(PRESET) -j $(JOBS) -LE reliability

# Serially: the soaks measure this machine's load, the kill tests time
# failure detection.
reliability: build
	ctest --preset $(PRESET) -L reliability

bench: build
	@for b in $(BIN)/*_benchmark; do echo "== $$b"; $$b || exit 1; done

# Only the benchmarks whose tables scripts/bench-report.py writes.
BENCH_REPORT_TARGETS = register_benchmark transfer_benchmark \
	write_latency_benchmark block_allocator_benchmark

bench-report: configure
	cmake --build --preset $(PRESET) -j $(JOBS) --target $(BENCH_REPORT_TARGETS)
	scripts/bench-report.py --build $(BUILD_DIR)
cluster-experiments: configure
	cmake --build --preset $(PRESET) -j $(JOBS) --target flowkv-cluster
	mkdir -p $(BUILD_DIR)/cluster-results
	scripts/run-cluster-experiments.sh $(BUILD_DIR) $(BUILD_DIR)/cluster-results \
	  | tee $(BUILD_DIR)/cluster-results/tables.md
	scripts/plot-cluster.py $(BUILD_DIR)/cluster-results $(BUILD_DIR)/cluster-results/*.json

validate-sim: configure
	cmake --build --preset $(PRESET) -j $(JOBS) --target flowkv-cluster
	mkdir -p $(BUILD_DIR)/sim-validation
	scripts/validate-sim.sh $(BUILD_DIR) $(BUILD_DIR)/sim-validation \
	  | tee $(BUILD_DIR)/sim-validation/table.md

fuzz: deps
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

format:
	clang-format -i $(SOURCES)

format-check:
	@clang-format --dry-run -Werror $(SOURCES) && echo "format: ok"

# The layering rules (scripts/check-layers.sh; seconds, run by .ci/run).
# TIDY=1 also runs clang-tidy over lib/ (minutes; needs clang-tidy-14).
lint: configure
	scripts/check-layers.sh
	@if [ "$(TIDY)" = "1" ]; then \
	  run-clang-tidy -quiet -p $(BUILD_DIR) 'lib/.*' || \
	    clang-tidy -p $(BUILD_DIR) $(filter lib/%.cc,$(SOURCES)); fi

clean:
	rm -rf build build-asan build-tsan build-debug build-fuzz
