# The two commands the README promises: `make run` and `make test`.
# Both create the virtual environment when it is missing and reuse it when present;
# it is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bytecode test-tls test-repeat test-kafka test-deploy-ha bench-security lint typecheck system-deps bench-storage bench chaos chaos-ci sim sim-soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# DEV_ARGS: options for `conveyor dev` (`make run DEV_ARGS="--brokers 5 --tls --auth"`).
DEV_ARGS ?=
run: $(STAMP)
	$(BIN)/conveyor dev $(DEV_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian/npm packages some tests need (prometheus, ...): one idempotent script each.
system-deps:
	@for script in $(sort $(wildcard scripts/system-deps/*.sh)); do bash $$script || exit 1; done

# Everything, and beside it the end-to-end (integration) suite again with every cluster on
# HTTPS: two pytest sessions side by side from the start (scripts/test_side_by_side.sh).
# The suite mostly waits on its clusters (1.3 of 2 cores busy on average when its phases
# ran one after the other), so its JOBS + TLS_JOBS xdist workers share the 2 cores; tests
# sharing a machine-wide resource run on one worker, the longest of those groups (the
# containers, the chaos set) started first (tests/conftest.py). JOBS=0 runs each session in
# its own process, one test at a time. docs/testing.md, "Budget".
JOBS ?= 4
TLS_JOBS ?= 2
PYTEST_JOBS = $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadgroup)
test: lint typecheck system-deps bytecode
	bash scripts/test_side_by_side.sh $(BIN) $(JOBS) $(if $(filter 0,$(JOBS)),0,$(TLS_JOBS))

# Every module compiled once before the tests: the suite starts thousands of coordinator,
# broker and `conveyor` processes, and where PYTHONDONTWRITEBYTECODE is set (it is in the
# environment this suite's timings were taken in) each one compiled Conveyor's sources
# again: about 0.2 s of CPU per process (docs/testing.md, "Where the CPU goes"). Python
# reads existing bytecode even with that variable set.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src tests >/dev/null

# The integration suite with every cluster on HTTPS (docs/security.md).
test-tls: $(STAMP) bytecode
	CONVEYOR_TEST_TLS=1 $(BIN)/pytest $(PYTEST_JOBS) --durations=10 tests/integration

# The end-to-end suite N times, plain and over HTTPS, on a fresh clone of HEAD; stops at
# the first failure (docs/testing.md). `make test-repeat N=5`.
N ?= 5
test-repeat:
	JOBS=$(JOBS) bash scripts/test_repeat.sh $(N)

# The Kafka listener with real clients (tests/kafka) and librdkafka's own test suite: every
# selected test in 0000-0100 (tests/kafka/librdkafka_selection.py) against a 3-broker
# cluster; `make test` runs only a short subset. KAFKA_RESULTS=docs/kafka-compatibility.md
# also rewrites the results table there.
KAFKA_RESULTS ?=
test-kafka: $(STAMP) system-deps
	$(BIN)/pytest tests/kafka
	$(BIN)/python -m tests.kafka.librdkafka_suite --out .cache/librdkafka-results \
		$(if $(KAFKA_RESULTS),--markdown $(KAFKA_RESULTS))

# docker-compose.yml's `ha` profile for real through podman (3 etcd members, 3 coordinators,
# 3 brokers; a takeover when the active coordinator's container dies). `make test` checks
# the profile offline only: this run builds images and takes minutes.
test-deploy-ha: $(STAMP) system-deps
	CONVEYOR_TEST_COMPOSE_HA=1 $(BIN)/pytest tests/deploy/test_compose_ha.py

# Produce throughput with TLS and auth on against plain HTTP (target >= 0.8).
bench-security: $(STAMP)
	$(BIN)/python scripts/bench_security.py

bench-storage: $(STAMP)
	$(BIN)/conveyor bench storage

# W1-W4 on Conveyor (its client over the Kafka listeners), confluent-kafka against the same
# broker build, and the peers (Redis, NATS, RabbitMQ: installed and started by
# bench/peers/peers.py), medians of 3 rounds; writes docs/benchmarks.md ("Peers", issue 19's
# targets) and a chart. BENCH_ARGS: options of bench/run_all.py, e.g.
# `make bench BENCH_ARGS="--peers-from RAW.jsonl"` (NATS and RabbitMQ from a same-day run).
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# Fault injection (docs/reliability.md). `make chaos DURATION=600 SEED=7` runs one long
# randomized campaign with every fault (three coordinators on etcd: --ha) and records its
# results in docs/reliability.md
# (SEED empty: a random one, printed); `make chaos-ci` is the short fixed-seed set that
# `make test` also runs (pytest -m chaos), every fault type at least once.
DURATION ?= 600
SEED ?=
RESULTS ?= docs/reliability.md
chaos: $(STAMP) system-deps
	$(BIN)/conveyor chaos --ha --duration $(DURATION) $(if $(SEED),--seed $(SEED)) --faults all \
		--results $(RESULTS)

chaos-ci: $(STAMP) system-deps
	$(BIN)/pytest tests/chaos -m chaos

# The deterministic simulation (tests/sim, docs/reliability.md): the coordinator and broker
# cores with a simulated clock, network and disks. `make sim SEEDS=N [FIRST=K]` runs seeds
# K..K+N-1 (`make test` runs 500); `make sim SEED=123` replays one seed exactly and, if it
# breaks a guarantee, prints its minimal trace. `make sim-soak` is the long run (100,000
# seeds, about 35 CPU-minutes; never part of make test), niced.
SEEDS ?= 500
FIRST ?= 0
SOAK_SEEDS ?= 100000
sim: $(STAMP)
	$(BIN)/python -m tests.sim $(if $(SEED),--seed $(SEED),--seeds $(SEEDS) --first $(FIRST))

sim-soak: $(STAMP)
	nice -n 10 $(BIN)/python -m tests.sim --seeds $(SOAK_SEEDS) --first $(FIRST)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
