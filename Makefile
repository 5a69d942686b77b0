# Tests run one torch thread per xdist worker (OMP_NUM_THREADS=1): on 2 cores with 2 workers,
# a second thread per worker only adds contention (tiny tensors ran 30x slower with 2 threads).
# Two commands for a fresh Linux machine with Python 3.11 (see README.md):
#   make book   installs everything and builds the website into _build/html
#   make test   installs everything and runs every test (gencore unit tests + nbval)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_FLAGS ?= -n 2 --dist loadfile

.PHONY: book test install execute clean unit nbval

$(STAMP): requirements-lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-lock.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

test: $(STAMP)
	PYTHONHASHSEED=0 OMP_NUM_THREADS=1 GENCORE_SCALE=quick CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest $(PYTEST_FLAGS) \
	  tests book --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15

unit: $(STAMP)
	PYTHONHASHSEED=0 OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_FLAGS) tests

nbval: $(STAMP)
	PYTHONHASHSEED=0 OMP_NUM_THREADS=1 GENCORE_SCALE=quick CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest $(PYTEST_FLAGS) \
	  book --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg

# Re-execute chapters after editing them (all, or NB=book/05_f_divergences.ipynb).
execute: $(STAMP)
	$(BIN)/python tools/nbtools.py execute $(NB)

clean:
	rm -rf _build
