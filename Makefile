# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nnunet-ext-installed

.PHONY: setup demo test test-fast clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch/torchvision are pinned in setup.py; pip takes them from this machine's local wheel store
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -e ".[test]"
	# byte-compile what pip installed on every core (pip compiles one file at a time: ~70 of its ~160 s on 2 cores);
	# torch's py312_intrinsics.py is Python 3.12 syntax, which pip's own compile step skips silently
	$(BIN)/python -m compileall -q -j 0 -x py312_intrinsics \
		"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/nnunet-ext demo

# all tests, including the integration tests that run nnUNetv2_* commands (marked slow); two pytest-xdist workers,
# one test file per worker (--dist loadfile), so a file's module fixtures (trained models) are built once
test: setup
	$(BIN)/python -m pytest tests -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf $(VENV) workspace *.egg-info .pytest_cache
