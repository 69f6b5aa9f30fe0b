"""The local path's speed (no Ray address): a look's runs trained side by side, then read back warm.

Trains 4 tiny runs (2 seeds and their null controls, 4 epochs, probed every epoch) through
`trainer.runs.parallel.obtain_all` into a fresh cache, in 2 worker processes, then asks for them again
(cache hits, nothing trained). Run it from two checkouts to compare them, one command against the other
(e.g. with `/usr/bin/time -v` or hyperfine); `PYTHONPATH=<checkout>` chooses which code is imported.

Usage: python benchmarks/local_path.py
Prints one JSON line: the code it ran (trainer's folder) and the cold and warm seconds.
"""

from __future__ import annotations

import json
import os
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ft-local-path-") as cache:
        os.environ.update(FT_CACHE_DIR=cache, FT_PARALLEL_RUNS="2")
        os.environ.pop("RAY_ADDRESS", None)
        import trainer
        from trainer import Experiment
        from trainer.runs import parallel

        runs = [Experiment(model="tiny-llama", epochs=4, eval_every=1, lr=1e-3, gen_tokens=4, seed=seed, data=data)
                for seed in (0, 1) for data in ("train", "control")]
        started = time.perf_counter()
        parallel.obtain_all(runs, progress=False)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        again = parallel.obtain_all(runs, progress=False)
        warm = time.perf_counter() - started
        parallel.shutdown()
        assert all(run.from_cache for run in again)
        print(json.dumps({"code": os.path.dirname(trainer.__file__), "cold_s": round(cold, 3),
                          "warm_s": round(warm, 4)}))


if __name__ == "__main__":
    main()
