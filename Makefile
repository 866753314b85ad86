# kvstore developer targets. Everything installs into .venv from a clean clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SEEDS  ?= 200
STEPS  ?= 3000
PYTEST_ARGS ?=
# The unit tests of the compiled codec, applier and records, run again as pure Python by make test
# (the garbage a decoder must refuse with CodecError reaches typed compiled code differently).
PURE_UNIT_TESTS := tests/unit/test_codec.py tests/unit/test_applier.py tests/unit/test_commands.py \
	tests/unit/test_leases.py tests/unit/test_raft_types.py tests/unit/test_compiled.py

# The modules setup.py compiles with mypyc: editing one makes the next install compile again.
COMPILED := $(shell grep -o '"kvstore/[a-z_/]*\.py"' setup.py | tr -d '"')

.PHONY: help install system-deps proto test unit sim cluster bench bench-raft typecheck lint clean

help:
	@echo "make cluster     install everything, start a local 3-node cluster with a short demo"
	@echo "make test        install everything (also system packages), type check, lint, run the whole"
	@echo "                 test suite, then the simulation and the codec/applier unit tests again as pure Python (KVSTORE_PURE_PYTHON=1)"
	@echo "make sim SEEDS=N [STEPS=M]  run N seeds of the deterministic Raft simulation"
	@echo "make proto       regenerate kvstore/_pb from proto/"
	@echo "make bench       kvstore vs etcd side by side (installs etcd when missing); BENCH_ARGS=... to change"
	@echo "make bench-raft  benchmark the Raft core alone (in memory, no I/O)"
	@echo "make typecheck   mypy (strict on the pure layers; see [tool.mypy] in pyproject.toml)"
	@echo "make lint        ruff over the tree"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml setup.py $(COMPILED) | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)
	@test -f kvstore/_pb/kvstore_pb2.py || $(MAKE) proto

# iptables, iproute2 and libfaketime (the Jepsen-style tests) and chromium (the status page test); installed only when missing.
system-deps:
	@bash deploy/install-system-deps.sh

proto: $(STAMP)
	$(BIN)/python -m kvstore._pb.generate

test: install system-deps typecheck lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	KVSTORE_PURE_PYTHON=1 $(BIN)/python -m pytest tests/sim $(PURE_UNIT_TESTS) $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

sim: install
	$(BIN)/python -m tests.sim --seeds $(SEEDS) --steps $(STEPS)

cluster: install
	@$(BIN)/kvctl cluster up --nodes 3 --demo

BENCH_ARGS ?= --workload put,get,a,b --duration 30 --concurrency 128 --processes 3 --output bench-results

bench: install
	@bash deploy/install-etcd.sh
	$(BIN)/kvctl bench $(BENCH_ARGS)

bench-raft: install
	$(BIN)/python benchmarks/raft_core.py

typecheck: install
	$(BIN)/mypy

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache kvstore_compiled__mypyc.*
	find kvstore -name '*.so' -delete
