# kcp — every target installs what it needs on a fresh machine.
#   make demo    a synthetic ZTF night through a local Kafka broker
#   make test    the whole test suite against a real Kafka broker
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
KAFKA_LIBS := $(CACHE)/kafka-libs
MAVEN_REPO := $(CURDIR)/$(CACHE)/m2
PYTEST_ARGS ?=

.PHONY: help test test-python-codec demo broker kafka-libs venv lint man bench bench-codec clean fuzz

help:
	@echo "make demo | test | test-python-codec | broker | lint | man | bench | bench-codec | fuzz | clean"

NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

# pip builds kcp's native Avro -> JSON codec (native/, Rust) with cargo when cargo is on PATH;
# without it kcp installs all the same and decodes with fastavro (kcp --version says which).
$(VENV)/.installed: setup.cfg pyproject.toml $(NATIVE_SOURCES)
	@command -v $(PYTHON) >/dev/null || { echo "kcp needs $(PYTHON) (Python >= 3.11) on PATH" >&2; exit 1; }
	@command -v cargo >/dev/null || echo "kcp: cargo not found: installing without the native" \
	    "codec (Python path; install Rust, e.g. from rustup.rs, then 'make clean venv')" >&2
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	$(VENV)/bin/kcp --version
	touch $@

venv: $(VENV)/.installed

# Java and Maven run the test broker; apt-get installs them when they are missing and we may.
$(CACHE)/.java-ok:
	@if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq default-jre-headless maven >/dev/null; \
	  else \
	    echo "kcp's tests need java (>= 17) and mvn (Maven) to run a real Kafka broker:" \
	         "install them, e.g. 'sudo apt-get install default-jre-headless maven'" >&2; exit 1; \
	  fi; \
	fi
	@mkdir -p $(CACHE) && touch $@

# The broker jars come from Maven Central; the Maven repository stays in .cache so reruns are offline.
$(KAFKA_LIBS)/.fetched: tests/kafka/pom.xml $(CACHE)/.java-ok
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -f tests/kafka/pom.xml -Dmaven.repo.local=$(MAVEN_REPO) \
	    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	touch $@

kafka-libs: $(KAFKA_LIBS)/.fetched

# jq: the README's tour pipes into it (the demo and the real-use tests run the tour).
$(CACHE)/.jq-ok:
	@command -v jq >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq jq >/dev/null; } || \
	  echo "jq is missing: the README tour's jq commands are skipped ('sudo apt-get install jq')" >&2
	@mkdir -p $(CACHE) && touch $@

test: venv kafka-libs $(CACHE)/.jq-ok
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The whole suite once more with the native codec off: the Python (fastavro) path, which a
# machine without cargo runs and --where/--map/--reader-schema take. CI runs it after `make test`.
test-python-codec: venv kafka-libs $(CACHE)/.jq-ok
	KCP_NATIVE=0 $(PY) -m pytest -q $(PYTEST_ARGS)

broker: venv kafka-libs
	$(PY) tests/kafka/broker.py --port 9092 --libs $(CURDIR)/$(KAFKA_LIBS)

demo: venv kafka-libs $(CACHE)/.jq-ok
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/demo.sh

# Each fuzz target of tests/test_fuzz.py (framing, OCF, JSON -> Avro, VOEvent, tar, FITS) for
# FUZZ_SECONDS; a failing input is saved in tests/fuzz-corpus, which make test replays.
FUZZ_SECONDS ?= 60
fuzz: venv
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(PY) -m pytest -q -s --timeout 0 tests/test_fuzz.py -k for_a_while

lint: venv
	$(VENV)/bin/ruff check kcp tests scripts

clean:
	rm -rf $(VENV) $(CACHE) build dist *.egg-info demo native/target kcp/codec/compiled*.so

bench-codec: venv
	$(PY) bench/codec.py

# kcp against kcat and the loop a user would write, on a broker of its own (or KCP_BENCH_BOOTSTRAP);
# BENCH_ALERTS=N alerts (20000). Prints one table and writes bench/results.json; docs/performance.md.
bench: venv kafka-libs
	@command -v kcat >/dev/null || command -v kafkacat >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq kcat >/dev/null; \
	  else \
	    echo "make bench compares kcp with kcat: install it (e.g. 'sudo apt-get install kcat');" \
	         "the kcat figures are skipped until then" >&2; \
	  fi; }
	$(PY) bench/run.py

man: venv
	$(PY) scripts/make_man.py
