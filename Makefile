# The two commands that matter: `make demo` and `make test`. Both create .venv
# from the lock file when it is missing or stale.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: demo test test-fast test-long test-stack venv system-deps lint format typecheck bench clean

venv:
	@bin/setup-venv

demo: venv
	@bin/demo

system-deps:
	@bin/install-system-deps

# Four tiers. `make test`: what a maintainer runs often, everything but the long
# scenarios and the team's stack, on two workers (under five minutes on two idle
# cores). `make test-fast`: the pure units and in-process TestPipeline transforms
# (under a minute; the tier is chosen in tests/conftest.py). `make test-long`: the
# scenarios of 30 s and more (marked `long`: several DAG runs in one test, the
# browser, the benchmark harness). `make test-stack`: the team's stack
# (docker-compose.yaml as processes on Postgres, tests/airflow/test_team_stack.py)
# alone, so that its timing checks (a killed scheduler's run within two minutes)
# own the cores. CI (.ci/run) runs `make test`, `make test-long`, `make test-stack`.
test: venv system-deps
	@$(PY) -m pytest -n 2 --dist loadgroup -q -m "not stack and not long"

test-fast: venv
	@$(PY) -m pytest -n 2 -q --fast

test-long: venv system-deps
	@$(PY) -m pytest -n 2 --dist loadgroup -q -m long

test-stack: venv system-deps
	@$(PY) -m pytest -q -m stack tests/airflow/test_team_stack.py

# ruff: lint rules and the formatter ([tool.ruff] in pyproject.toml); `make format` applies it.
lint: venv
	@.venv/bin/ruff check beam_jobs plugins dags tests benchmarks
	@.venv/bin/ruff format --check beam_jobs plugins dags tests benchmarks

format: venv
	@.venv/bin/ruff format beam_jobs plugins dags tests benchmarks

# mypy on beam_jobs and plugins/ssl_splits ([tool.mypy] in pyproject.toml); tests/core/test_typecheck.py runs it too.
typecheck: venv
	@.venv/bin/mypy --cache-dir "$${TMPDIR:-/tmp}/ssl-splits-mypy-$$(id -u)"

bench: venv
	@$(PY) -m benchmarks.run

clean:
	rm -rf .demo .bench .airflow test-artifacts
