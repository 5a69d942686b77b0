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

.PHONY: book test install execute clean unit nbval browser student colab

$(STAMP): requirements-lock.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-lock.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

# tests/test_website.py needs Chromium; `make test` never skips it. As root (CI, containers)
# this installs Debian's package; otherwise it stops and says how to install it.
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser)
browser:
	@if [ -z "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for tests/test_website.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs Chromium for tests/test_website.py. Install it with" >&2; \
	    echo "  sudo apt-get install chromium      (Debian/Ubuntu)" >&2; \
	    echo "or run: make test CHROMIUM=/path/to/chromium" >&2; \
	    exit 1; \
	  fi; \
	fi

test: $(STAMP) browser
	CHROMIUM=$(CHROMIUM) PYTHONHASHSEED=0 OMP_NUM_THREADS=1 GENCORE_SCALE=quick CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest $(PYTEST_FLAGS) \
	  tests book --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg --durations=15

unit: $(STAMP)
	PYTHONHASHSEED=0 OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_FLAGS) tests

nbval: $(STAMP)
	PYTHONHASHSEED=0 OMP_NUM_THREADS=1 GENCORE_SCALE=quick CUDA_VISIBLE_DEVICES= $(BIN)/python -m pytest $(PYTEST_FLAGS) \
	  book --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg

# The student edition: the book without solutions (solution cells become stubs that call the
# auto-checker), written to _build/student and built into _build/student/_build/html.
STUDENT ?= _build/student
student: $(STAMP)
	$(BIN)/python tools/student.py $(STUDENT)
	$(BIN)/jupyter-book build $(STUDENT) -W -n --keep-going

# The Colab install against a Colab-like stack (needs the package index; about 5 min; not in `make test`).
colab: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m colab -s tests/test_colab_env.py

# Re-execute chapters after editing them (all, or NB=book/05_f_divergences.ipynb).
execute: $(STAMP)
	$(BIN)/python tools/nbtools.py execute $(NB)

clean:
	rm -rf _build
