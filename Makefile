# make run   -> .venv, then the quickstart experiment (runs/quickstart/report.md)
# make test  -> .venv, then the whole test suite
# make bench -> .venv, then the side-by-side throughput benchmark
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-all bench clean

# (Re)create the environment when pyproject.toml changes. torch is pinned (torch==2.13.0) so that a
# machine with the local CPU wheel takes it instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,cluster,search]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/committee run configs/quickstart.yaml --overwrite

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m "slow or not slow"

bench: install
	$(VENV)/bin/committee bench

clean:
	rm -rf $(VENV) runs
