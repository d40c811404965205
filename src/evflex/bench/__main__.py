"""`python -m evflex.bench SCENARIO ...`: the same as `evflex bench SCENARIO ...`."""

from evflex.bench.cli import bench_app

bench_app(prog_name="evflex bench")
