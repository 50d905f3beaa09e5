# The front door: `make demo` and `make test` each set up what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test bench install clean

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

bench: $(VENV)/.stamp-bench
	$(PY) -m bench

clean:
	rm -rf $(VENV) .llmcost build *.egg-info
