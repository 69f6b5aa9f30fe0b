"""Two processes asking for the same experiment at once: one trains, the other waits and reads the record."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = """
import json, sys
from trainer import Experiment
from trainer.runner import obtain
run = obtain(Experiment(model="tiny-llama", epochs=2, eval_every=1, lr=1e-3, gen_tokens=4, seed=int(sys.argv[1])),
             progress=False)
print(json.dumps({"from_cache": run.from_cache, "key": run.key, "margins": run.evaluation(2)["margins"]}))
"""


def launch(seed: int, cache: Path) -> subprocess.Popen:
    env = os.environ | {"FT_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(seed)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def results(processes):
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


def test_same_experiment_in_two_processes_is_trained_once(private_cache):
    first, second = results([launch(0, private_cache), launch(0, private_cache)])
    assert first["key"] == second["key"]
    assert sorted([first["from_cache"], second["from_cache"]]) == [False, True], "trained twice or not at all"
    assert first["margins"] == second["margins"]


def test_different_experiments_in_two_processes_both_train(private_cache):
    first, second = results([launch(0, private_cache), launch(1, private_cache)])
    assert first["key"] != second["key"]
    assert not first["from_cache"] and not second["from_cache"]
