# sparks: `make demo` trains and evaluates a small sub-bit model on Fashion-MNIST (CPU); `make test` runs the tests.
# Both create .venv first when it is missing (torch 2.13.0 first, so pip takes the local CPU copy).
PY ?= .venv/bin/python

.PHONY: demo test lint

$(PY):
	python3 -m venv .venv
	.venv/bin/pip install torch==2.13.0
	.venv/bin/pip install -e '.[test]'

demo: $(PY)
	bash scripts/demo.sh

test: $(PY)
	$(PY) -m pytest -q

lint: $(PY)
	$(PY) -m ruff check sparks tests
