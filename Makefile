# The two commands a new user runs: `make demo` and `make test`.
# Both create .venv if missing and install the three distributions in editable mode.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.esper-installed
INPUTS := pyproject.toml constraints.txt \
	esper_blueprints_cnn/pyproject.toml esper_blueprints_transformer/pyproject.toml

.PHONY: demo test bench lint install clean

$(STAMP): $(INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-e '.[dev,demo,tensorboard,hf]' -e ./esper_blueprints_cnn -e ./esper_blueprints_transformer
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/esper demo

# The fast tier first, then the slow tiers (pip installs, real processes, docs, the demo).
test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest -m "integration or multiprocess or docs or demo or hf"

bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) esper-demo .pytest_cache .hypothesis
