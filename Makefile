# Two commands do everything: `make demo` (install, then the embedded demo) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/pspnet demo --out demo_out

lint: install
	$(PY) -m ruff check pspnet tests benchmarks
	$(PY) -m ruff format --check pspnet tests benchmarks

test: install lint
	$(PY) -m pytest -q
