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

# Everything, then the end-to-end (integration) suite again with every cluster on HTTPS.
# JOBS pytest-xdist workers (docs/testing.md: the suite mostly waits on its clusters, so
# 3 workers on 2 cores; tests sharing a machine-wide resource run on one worker, see
# tests/conftest.py); JOBS=0 runs in this process, one test at a time.
JOBS ?= 3
PYTEST_JOBS = $(if $(filter 0,$(JOBS)),,-n $(JOBS) --dist loadgroup)
# The container, chaos and HA suites run after the parallel phase, kept apart from its
# load: they drive whole deployments, etcd and nftables with timing the other workers' load
# upset. SERIAL_JOBS=0: one test at a time; N: on N workers, one xdist group each (the
# containers, the chaos set, each HA module: tests/conftest.py). Beside them runs the HTTPS
# pass of the integration suite on TLS_JOBS workers (they share nothing, and the serial
# suites mostly wait): docs/testing.md, "Budget". SERIAL_JOBS=2 TLS_JOBS=3 ended 2 minutes
# sooner but failed timing bounds (the image's SIGTERM stop, CLI reads) at that load.
SERIAL_SUITES = tests/deploy tests/chaos tests/ha
SERIAL_JOBS ?= 0
TLS_JOBS ?= 2
test: lint typecheck system-deps bytecode
	$(BIN)/pytest $(PYTEST_JOBS) --durations=25 $(addprefix --ignore=,$(SERIAL_SUITES))
	bash scripts/test_side_by_side.sh $(BIN) $(if $(filter 0,$(JOBS)),0 0,$(TLS_JOBS) $(SERIAL_JOBS)) \
		$(SERIAL_SUITES)

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
