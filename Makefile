# The two commands the README starts with, and the helpers behind them.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo demo-netns test lint venv lock bench clean

demo: venv                ## a local demo lab on 127.0.0.0/8 (Ctrl-C stops it all)
	@scripts/ensure-haproxy
	$(PY) -m tests.support.demo

demo-netns: venv          ## the same demo in network namespaces (root)
	@scripts/ensure-haproxy
	@[ "$$(id -u)" -eq 0 ] || { echo "the namespace lab needs root: sudo make demo-netns"; exit 1; }
	scripts/in-private-netns $(PY) -m tests.support.netlab

test: venv                ## the whole suite, inside a private network namespace
	scripts/in-private-netns $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict poller
	$(VENV)/bin/lint-imports

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "python3 cannot make a venv: install it with 'sudo apt-get install python3-venv'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
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
	@scripts/ensure-packages haproxy wrk nmap
	scripts/in-private-netns $(PY) -m bench.scan
	scripts/in-private-netns $(PY) -m bench.churn
	scripts/in-private-netns $(PY) -m bench.status
	@if [ "$$(id -u)" -eq 0 ]; then \
	   scripts/in-private-netns $(PY) -m bench.lab && \
	   scripts/in-private-netns $(PY) -m bench.discovery && \
	   scripts/in-private-netns $(PY) -m bench.footprint; \
	 else echo "bench/lab.py, discovery.py, footprint.py need root (namespaces): sudo make bench"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
