# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean

# torch is installed first, pinned to 2.13.0: that CPU build lies on this machine's disk, whereas an
# unpinned resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[export,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/chatvla2 demo

# Lint and format check first (seconds), then the suite. pytest's exit code 5 (no tests collected)
# fails the target like any other non-zero code. Two pytest-xdist workers, one per core: each test
# keeps to one torch thread (tests/conftest.py), so one process alone left the second core idle.
# --dist loadscope keeps a module's tests on one worker, so its module fixtures are built once.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 2 --dist loadscope

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
