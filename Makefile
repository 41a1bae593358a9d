# The two commands: `make sim` and `make test`. Each creates .venv and installs the
# project when needed, so a fresh clone on a machine with only python3 works.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= mission_configs/default_sso.yaml
RUN    ?= runs/default

.PHONY: sim test bench bench-quick lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

sim: $(STAMP)
	@mkdir -p $(dir $(RUN))
	$(BIN)/groundtools uplink plan $(CONFIG) --out $(RUN).uplink.bin
	$(BIN)/flightsim run $(CONFIG) --out $(RUN) --uplink $(RUN).uplink.bin --report --force
	@echo "Open the review report: file://$(abspath $(RUN))/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/flightsim bench all

bench-quick: $(STAMP)
	$(BIN)/flightsim bench all --quick

lint: $(STAMP)
	$(BIN)/ruff check flight_sw sim ground_tools tests

clean:
	rm -rf runs bench-results.json .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
