# sparks: `make demo` trains, evaluates, exports and runs a small sub-bit model on Fashion-MNIST (CPU);
# `make test` lints and runs the test suite. Both first run scripts/setup.sh, which creates .venv (torch 2.13.0
# first, so pip takes the local CPU copy) and installs Debian's dataset-fashion-mnist, each only when missing.

.PHONY: demo test lint setup

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check sparks tests bench scripts
