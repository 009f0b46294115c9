# The README's two commands: `make demo` and `make test`.
VENV ?= .venv
export TF_USE_LEGACY_KERAS := 1

.PHONY: install install-dev demo test lint up down status

install:
	bash infra/install.sh all

install-dev:
	bash infra/install.sh dev

demo: install
	$(VENV)/bin/freshrec demo

test: install-dev
	bash infra/test.sh

lint: install-dev
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

up down status: install
	$(VENV)/bin/freshrec infra $@
