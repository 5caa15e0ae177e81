# One entry point for a new machine: Python 3.11, git and make are all it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install link browser demo test test-fast check lint bench clean

# `idv` on PATH from any folder: a link in BINDIR (~/.local/bin, which most login shells put
# on PATH) to the venv's command, made by `make install` and `make demo`. BINDIR= makes none.
BINDIR ?= $(HOME)/.local/bin

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (set PY=...)"; exit 1; }
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt --config-settings editable_mode=compat -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) link

# A file of that name that is not a link (another program's idv) is left alone.
link:
	@if [ -n "$(BINDIR)" ]; then \
	  mkdir -p "$(BINDIR)"; \
	  if [ -e "$(BINDIR)/idv" ] && [ ! -L "$(BINDIR)/idv" ]; then \
	    echo "$(BINDIR)/idv is not a link made here: left alone; idv is $(CURDIR)/$(BIN)/idv"; \
	  else \
	    ln -sfn "$(CURDIR)/$(BIN)/idv" "$(BINDIR)/idv"; \
	    case ":$$PATH:" in *":$(BINDIR):"*) ;; \
	      *) echo "idv is in $(BINDIR), not on PATH yet: add" \
	        "export PATH=\"$(BINDIR):\$$PATH\" to your shell's profile";; esac; \
	  fi; \
	fi

demo: $(STAMP) link
	$(BIN)/idv demo

# The browser tests drive Debian's chromium through Playwright (never `playwright install`).
# fonts-noto-cjk gives it Chinese glyphs: without a CJK font every page's Chinese is boxes.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@missing=""; test -x $(CHROMIUM) || missing="chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	test -z "$$missing" || $(SUDO) apt-get install -y -q $$missing \
	  || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }

# Workers for pytest-xdist; `--dist loadgroup` keeps the Prefect harness tests on one worker.
WORKERS ?= auto
XDIST = -n $(WORKERS) --dist loadgroup
# The lane that starts no process (no `idv` subprocess, no Prefect, no browser, no fork)
# and needs no PostgreSQL: a schema migrated per test adds some 40 s to the lane's 60 s.
FAST = not e2e and not prefect and not subprocess and not postgres

# Every test, PostgreSQL's too when IDV_TEST_DATABASE_URL is set (CI sets it).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q $(XDIST)

# Unit, contract and in-process integration tests on SQLite, for the edit-test loop; the
# tests marked `slow` (long by nature) are left to `make test`. Bytecode is cached under
# .pytest_cache/ even where PYTHONDONTWRITEBYTECODE is set: otherwise every worker compiles
# every module it imports again, some 5 s of each worker's start.
test-fast: $(STAMP)
	PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/.pytest_cache/pycache \
	  $(BIN)/python -m pytest -q $(XDIST) -m "$(FAST) and not slow"

# Lint, formatting, import contracts and types (mypy strict on policies/, verifiers/,
# storage/: the [tool.mypy] table of pyproject.toml): CI runs it before the tests, `make
# check` too.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

check: lint test

# The documentation site (mkdocs.yml, docs/): the reference pages made from the code are
# written again, then the site is built into .site/ with `--strict`, so a broken link or
# anchor fails it. Built and rendered offline: no web font, CDN or plugin that fetches.
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python docs/gen_cli.py
	$(BIN)/python docs/gen_api.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d .site

bench: $(STAMP)
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/batch_throughput.py 1000
	$(BIN)/python bench/crypto_costs.py 100000
	$(BIN)/python bench/throughput.py --n 1000

clean:
	rm -rf $(VENV) .idv .pytest_cache
