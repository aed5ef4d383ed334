# Every target sets itself up on a fresh machine: a virtualenv in .venv with the project installed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch==2.13.0 is the CPU wheel that lies on this kind of machine's disk; pinning it keeps pip
# from pulling a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup test test-fast lint demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps openai-clip==1.0.1
	touch $@

setup: $(BIN)/.installed

# The demo needs only the runtime dependencies (no torch, tensorflow-datasets, test tools).
$(BIN)/.runtime: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

lint: setup
	$(BIN)/ruff check crossgap_jax tests benchmarks

# The full suite, real-size parity included (what CI runs).
test: setup
	$(BIN)/ruff check crossgap_jax tests benchmarks
	$(BIN)/python -m pytest -n 2 --dist loadfile -q --durations=25 tests

# The developer's lane: tests not marked slow, under 2 minutes on 2 idle cores
# (docs/performance.md). XLA's LLVM backend at optimisation level 0 compiles the tiny test
# programs ~1.5x faster; it changes no operation's semantics (results agree to float
# tolerance; the tests that compare programs compare two compiled under the same flags).
# CI (`make test`) runs everything at the default level. JAX's persistent compilation cache
# (in .venv, so `make clean` empties it) lets the workers, the subprocess tests and the next
# run reuse each compiled test program; the cache key is the program, the backend, the JAX
# version and the XLA flags, so a hit is the same executable.
FAST_XLA_FLAGS ?= --xla_backend_optimization_level=0
FAST_JAX_CACHE ?= $(CURDIR)/$(VENV)/jax-compilation-cache
test-fast: setup
	XLA_FLAGS="$(FAST_XLA_FLAGS) $$XLA_FLAGS" JAX_COMPILATION_CACHE_DIR="$(FAST_JAX_CACHE)" \
		JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1 \
		$(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow" --durations=15 tests

demo: $(BIN)/.runtime
	$(BIN)/crossgap-jax demo

bench: setup
	$(BIN)/crossgap-jax bench
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_retrieval.py
	$(BIN)/python benchmarks/bench_inversion.py
	$(BIN)/python benchmarks/bench_progress.py
	$(BIN)/python benchmarks/bench_isoclip.py
	$(BIN)/python benchmarks/bench_demo.py

clean:
	rm -rf $(VENV) build *.egg-info
