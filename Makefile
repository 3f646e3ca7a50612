# Two commands do everything: `make demo` (install, then the embedded demo) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint bench browser docs

# The documentation site (mkdocs.yml). Material prints a notice about MkDocs 2.0 on every build;
# the variable silences it.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs
SITE_DIR := site

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

# The page test (tests/serve/test_page.py) drives Debian's Chromium; CI runs as root with apt.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq chromium; \
	elif [ ! -x /usr/bin/chromium ]; then \
		echo "no /usr/bin/chromium: the browser test will be skipped (as root: apt-get install chromium)"; \
	fi

# The docs are built --strict: a broken link, a missing page or a stale anchor fails the test.
test: install lint browser
	$(MKDOCS) build --strict --site-dir $(SITE_DIR)
	$(PY) -m pytest -q

# Serves the documentation at http://127.0.0.1:8000/, rebuilt as docs/ or pspnet/ change.
docs: install
	$(MKDOCS) serve
