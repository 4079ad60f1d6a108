# dials-factored: the two commands of the README are `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: install demo test bench lint clean

install:
	bash scripts/install.sh

demo: install
	$(PY) -m harness.demo --workdir demo_run

test: install
	$(PY) -m pytest -q tests

# The benchmark of issue 5 (long: run it on a quiet machine).  Options through BENCH_ARGS,
# e.g. make bench BENCH_ARGS="--modes stills --stills 100 --reuse"; all of them:
# $(PY) -m benchmarks.run --help (--modes stills rotation real, --stills N, --rotation N,
# --detector FAST,SLOW, --memory-sizes N,..., --ranks 1,2, --nproc N, --reuse, --results DIR).
bench: install
	$(PY) -m benchmarks.run $(BENCH_ARGS)

lint: install
	.venv/bin/ruff check .

clean:
	rm -rf demo_run benchmarks/work .pytest_cache
