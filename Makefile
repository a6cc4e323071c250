# keywarden: `make demo` runs the main job on the embedded local default; `make test` runs everything.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: demo test venv lint env-template clean-demo

demo: ## init, provision and deliver on this machine; show that the app's credentials log in
	@scripts/dev/bootstrap demo
	@scripts/demo/run

test: ## lint, pytest (unit + integration), molecule; ends with "N passed, N failed"
	@scripts/dev/bootstrap test
	@scripts/dev/test-all

venv:
	@scripts/dev/bootstrap demo

lint: venv
	yamllint --strict . && ansible-lint --offline && ruff check . && ruff format --check . && scripts/secrets/env-template --check

env-template: venv ## regenerate .env.template from the catalog
	scripts/secrets/env-template

clean-demo: ## stop the demo's PostgreSQL, Redis and nginx and remove their state (vault password, local store, .env files)
	-scripts/demo/postgres stop .demo
	-scripts/demo/redis stop .demo
	-scripts/demo/nginx stop .demo
	rm -rf .demo inventories/local/store
