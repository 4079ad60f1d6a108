# dials-factored: the two commands of the README are `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: install demo test lint clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m dials_factored.demo --workdir demo_run

test: install
	$(PY) -m pytest -q tests

lint: install
	.venv/bin/ruff check .

clean:
	rm -rf demo_run .pytest_cache
