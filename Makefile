# The two commands: `make run` (the pipeline on the embedded synthetic data) and `make test`.
# Both create .venv with Python 3.10 and install the pinned requirements the first time.
PYTHON ?= python3.10
VENV := .venv
INSTALLED := $(VENV)/.installed-requirements
export TF_USE_LEGACY_KERAS := 1

.PHONY: run test test-quick clean

$(INSTALLED): requirements.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# Every package is pinned in requirements.txt (resolved once from requirements.in),
	# so pip installs exactly that set without resolving again.
	$(VENV)/bin/python -m pip install --quiet --no-deps --requirement requirements.txt
	touch $(INSTALLED)

run: $(INSTALLED)
	$(VENV)/bin/python local_runner.py $(ARGS)

# Two pytest-xdist workers (tests/conftest.py groups them); TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

# --no-loadscope-reorder: the workers take the groups in tests/conftest.py's order.
XDIST := --numprocesses $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test: $(INSTALLED)
	$(VENV)/bin/python -m pytest tests $(XDIST) $(PYTEST_ARGS)

# The quick tier for the edit-and-run loop: every test that starts no process, and one small
# end-to-end run and its cached rerun (tests/conftest.py).
test-quick: $(INSTALLED)
	$(VENV)/bin/python -m pytest tests -m quick $(XDIST) $(PYTEST_ARGS)

clean:
	rm -rf outputs data/busi_synthetic
