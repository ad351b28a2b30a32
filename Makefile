# bpfpolicy — the two entry points a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BPFPOLICY := $(VENV)/bin/bpfpolicy
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

setup:
	bash scripts/setup.sh

## demo: set up the host, then validate, compile and apply the example policies inside a
## throwaway network namespace (never the host's interfaces), show status, tear down.
demo:
	bash scripts/demo.sh

## test: the whole suite (kernel tests need root; QEMU tests run the one-kernel smoke).
test:
	bash scripts/test.sh $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf out build .pytest_cache

-include kernel-tests/matrix.mk
