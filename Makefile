# The two commands the README starts with, and the helpers behind them.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: help demo demo-netns test test-haproxy3 test-engine test-hosts standins lint docs mutate venv runtime-venv lock bench clean

help:                     ## this list
	@grep -E '^[a-z0-9.-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 14

demo: runtime-venv        ## a local demo lab on 127.0.0.0/8, about a minute (Ctrl-C stops it)
	@scripts/ensure-haproxy
	$(PY) -m tests.support.demo

demo-netns: runtime-venv  ## the same demo in network namespaces (root)
	@scripts/ensure-haproxy
	@[ "$$(id -u)" -eq 0 ] || { echo "the namespace lab needs root: sudo make demo-netns"; exit 1; }
	scripts/in-private-netns $(PY) -m tests.support.netlab

test: venv                ## the whole suite in a private network namespace (~25 min here)
	@$(MAKE) --no-print-directory standins
	scripts/in-private-netns $(PY) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-haproxy3

# The runtime-API tests again, against HAProxy 3.0 (Debian 13's, in a debootstrapped root).
RUNTIME_API_TESTS = tests/integration/test_run.py tests/integration/test_backends_mode.py \
	tests/integration/test_quiet.py tests/integration/test_faults.py
test-haproxy3: venv    ## the runtime-API tests against HAProxy 3.0 (root; ~3 min)
	@if [ "$$(id -u)" -eq 0 ]; then $(PY) -m tests.support.haproxies; \
	 else echo "not root: HAProxy 3.0 cannot be prepared (the tests say why)"; fi
	POLLER_TEST_HAPROXY=$(CURDIR)/tests/support/haproxy-in-root \
	POLLER_HAPROXY_ROOT=$${POLLER_HAPROXY_CACHE:-/var/cache/poller-haproxy}/3.0 \
	scripts/in-private-netns $(PY) -m pytest $(RUNTIME_API_TESTS) $(PYTEST_ARGS)

test-engine: venv         ## only the real Docker engine suite (root, docker.io)
	@$(MAKE) --no-print-directory standins
	scripts/in-private-netns $(PY) -m pytest -m engine $(PYTEST_ARGS)

test-hosts: venv          ## only the two-node swarm (two Docker engines; root, docker.io)
	@$(MAKE) --no-print-directory standins
	scripts/in-private-netns $(PY) -m pytest -m hosts $(PYTEST_ARGS)

standins: venv            ## the engine suite's base images, made offline-able (root; cached)
	@if [ "$$(id -u)" -eq 0 ]; then $(PY) -m tests.support.standins; \
	 else echo "not root: the engine suite (tests/engine) will skip"; fi

mutate: venv              ## mutation testing of the cores and activities by the unit tests (~30 min)
	rm -rf mutants  # mutmut keeps old verdicts of unchanged code, even when the tests changed
	scripts/in-private-netns $(VENV)/bin/mutmut run --max-children 2 >/dev/null
	$(PY) -m tests.support.mutation

docs: venv                ## docs/CONFIGURATION.md from the settings' descriptions
	$(PY) scripts/config_reference.py --write

lint: venv                ## ruff, mypy --strict, import-linter's layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict poller
	$(VENV)/bin/lint-imports

venv: $(VENV)/.installed        ## runtime + test and lint tools (requirements-dev.lock)

runtime-venv: $(VENV)/.runtime  ## the runtime only (requirements.lock): what the demo needs

$(VENV)/.runtime: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "python3 cannot make a venv: install it with 'sudo apt-get install python3-venv'"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@touch $@

lock:                     ## re-pin requirements*.lock from pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet . && { \
	  echo "# Runtime dependencies, pinned: what the poller image installs. Regenerate with 'make lock'."; \
	  .lock-venv/bin/pip freeze --exclude poller; } > requirements.lock
	.lock-venv/bin/pip install --quiet '.[dev]' && { \
	  echo "# Runtime + development dependencies, pinned: what CI installs. Regenerate with 'make lock'."; \
	  .lock-venv/bin/pip freeze --exclude poller; } > requirements-dev.lock
	rm -rf .lock-venv

bench: venv               ## the benchmarks (minutes); results in docs/BENCHMARKS.md
	@scripts/ensure-packages haproxy wrk nmap keepalived
	scripts/in-private-netns $(PY) -m bench.scan
	scripts/in-private-netns $(PY) -m bench.churn
	scripts/in-private-netns $(PY) -m bench.status
	scripts/in-private-netns $(PY) -m bench.slowstart
	scripts/in-private-netns $(PY) -m bench.drain
	scripts/in-private-netns $(PY) -m bench.retries
	@if [ "$$(id -u)" -eq 0 ]; then \
	   scripts/in-private-netns $(PY) -m bench.lab && \
	   scripts/in-private-netns $(PY) -m bench.discovery && \
	   scripts/in-private-netns $(PY) -m bench.services && \
	   scripts/in-private-netns $(PY) -m bench.footprint && \
	   scripts/in-private-netns $(PY) -m bench.hot && \
	   $(PY) -m bench.members && \
	   $(PY) -m bench.failover && \
	   $(PY) -m bench.engine; \
	 else echo "bench/lab.py, discovery.py, services.py, footprint.py, hot.py, members.py, failover.py, engine.py need root (namespaces): sudo make bench"; fi

clean:                    ## remove the venv and the tools' caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
