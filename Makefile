# neighbourgrid: `make demo` runs the main job, `make test` the whole suite. Both bootstrap what
# they need (.venv, the package with its dev extras, the MicroPython VM from npm) and are safe to
# run twice.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
MARKET_STAMP := edge/market/_compiled.json

.PHONY: demo test hil lint deps node mosquitto bench clean help market market-clean
.DEFAULT_GOAL := help

help:
	@echo "make demo   run the main job (ngrid simulate on its defaults)"
	@echo "make test   lint, type-check, architecture contracts, then every test tier"
	@echo "make hil    the hardware-in-loop rig (virtual board unless HIL_ARGS=--board PORT)"
	@echo "make bench  run the benchmarks in bench/ and print their figures"
	@echo "make market compile the market core with mypyc (make deps does; market-clean undoes)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

deps: $(STAMP) node $(MARKET_STAMP)

# The market core compiled in place with mypyc (docs/market.md, "Compiled build"). Rebuilt when its
# sources change; without a C compiler the build says so and the interpreted source runs.
MARKET_SRC := $(addprefix edge/market/,events.py engine.py _native.py _build.py)
$(MARKET_STAMP): $(STAMP) $(MARKET_SRC)
	$(BIN)/python -P edge/market/_build.py

market: $(STAMP)
	$(BIN)/python -P edge/market/_build.py

market-clean:
	$(BIN)/python -P edge/market/_build.py --clean

# The MicroPython VM (WebAssembly port) for the firmware tests, pinned in package-lock.json.
node:
	@if [ -f package-lock.json ]; then \
	  command -v npm >/dev/null || { echo "npm is missing: sudo apt-get install -y nodejs npm"; exit 1; }; \
	  if [ ! -f $(NODE_STAMP) ] || [ package-lock.json -nt $(NODE_STAMP) ]; then \
	    npm ci --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	  fi; \
	fi

mosquitto:
	@PATH="$$PATH:/usr/sbin:/usr/local/sbin" command -v mosquitto >/dev/null || { \
	  echo "Mosquitto is missing; install it with: sudo apt-get install -y mosquitto"; exit 1; }

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest's own exit status is kept: 5 ("no tests ran") fails the run like any other failure.
test: deps mosquitto lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest hil $(PYTEST_ARGS)

# The hardware-in-loop rig alone: on the virtual board, or `make hil HIL_ARGS="--board /dev/ttyUSB0"`.
hil: deps mosquitto
	$(BIN)/python -m pytest hil $(HIL_ARGS)

demo: deps mosquitto
	$(BIN)/ngrid simulate $(DEMO_ARGS)

bench: deps
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache build/market-native
	rm -f edge/market/*.so edge/market/_compiled.json
