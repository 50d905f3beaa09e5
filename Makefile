# The front door: `make demo` and `make test` each set up what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test soak bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per set of extras, redone when pyproject.toml changes.
$(VENV)/.stamp-%: pyproject.toml | $(PY)
	$(PIP) install -e '.[$*]'
	@touch $@

install: $(VENV)/.stamp-demo

demo: $(VENV)/.stamp-demo
	$(PY) examples/demo.py

test: $(VENV)/.stamp-test
	$(PY) -m pytest

# The OTLP endpoints' fuzz test with a long budget (`make test` runs 200 inputs); its figures are printed.
SOAK_EXAMPLES ?= 20000
soak: $(VENV)/.stamp-test
	LLMCOST_FUZZ_EXAMPLES=$(SOAK_EXAMPLES) $(PY) -m pytest tests/test_fuzz.py -q -s -p no:cacheprovider

bench: $(VENV)/.stamp-bench
	$(PY) -m bench

clean:
	rm -rf $(VENV) .llmcost build *.egg-info
