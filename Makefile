# Two commands set everything up: `make run` (the agent end to end) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: deps test run bench release clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

# Debian packages the tests drive for real (monit: the BOSH VM lifecycle test), the Elasticsearch
# artifact. The bosh CLI is not installed here: $BOSH_CLI, bosh on PATH or ../shared/tools/bosh.
deps: $(STAMP)
	@missing=""; for c in logrotate:logrotate ruby:ruby nginx:nginx-light openssl:openssl setpriv:util-linux monit:monit mvn:maven java:openjdk-17-jre-headless; do \
	  command -v $${c%%:*} >/dev/null || [ -x /usr/sbin/$${c%%:*} ] || missing="$$missing $${c##*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi
	$(PY) -m tests.support.esnode fetch

# Workers: most tests wait on outages, rotations and sleeps, so more workers than cores overlap them
# (README, Tests: the measured choice). TEST_WORKERS=0 runs serially in one process.
TEST_WORKERS ?= 4
test: deps
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

run: deps
	$(PY) -m tests.support.demo

# Throughput and footprint, steady state at ordinary rates, a week of registry history.
# With BASE=<commit>: that commit's agent against this tree's, interleaved, the ratio per workload.
bench: deps
ifdef BASE
	$(PY) -m tests.bench.compare --base $(BASE) --workloads raw,parsed,steady
else
	$(PY) -m tests.bench.run
	$(PY) -m tests.bench.steady --files 20 --rate 2000
	$(PY) -m tests.bench.steady --files 200 --rate 4000
	$(PY) -m tests.bench.history --parts registry,agent
endif

release: $(STAMP)
	bash bosh/scripts/make-release.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
