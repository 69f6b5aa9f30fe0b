"""pytest-xdist workers asking for the same experiments at once: each experiment trains exactly once,
every worker gets the same record, and different experiments train at the same time."""

from __future__ import annotations

import json

WORKERS = 3
EXPERIMENTS = 3

# Every worker asks for every experiment (--dist each), starting at a different one, so at any moment
# the workers want different experiments. A training run waits (up to a minute) until every experiment
# has started training: were different experiments serialised (one lock for all), none would arrive.
SUITE = """
import json, os, time
from pathlib import Path

import pytest

from trainer import Experiment
from trainer.runs import obtain as runner
from trainer.cache import store

EXPERIMENTS = [Experiment(model="tiny-llama", epochs=2, eval_every=1, lr=1e-3, gen_tokens=4, seed=seed)
               for seed in range({experiments})]
LOG = Path(os.environ["CONCURRENCY_LOG"])


@pytest.fixture(autouse=True, scope="session")
def trainings_meet():
    original = runner.train_run

    def train(exp, folder, *args, key, **kwargs):
        (LOG / f"started-{{key}}-{{os.getpid()}}").touch()
        deadline = time.monotonic() + 60
        while len(list(LOG.glob("started-*"))) < len(EXPERIMENTS):
            if time.monotonic() > deadline:
                (LOG / f"alone-{{key}}").touch()
                break
            time.sleep(0.02)
        return original(exp, folder, *args, key=key, **kwargs)

    runner.train_run = train
    yield
    runner.train_run = original


@pytest.mark.parametrize("turn", range(len(EXPERIMENTS)))
def test_request(turn, worker_id, finetune):
    worker = int(worker_id.removeprefix("gw"))
    run = finetune(EXPERIMENTS[(turn + worker) % len(EXPERIMENTS)]).primary(2, with_control=False)
    record = store.read_record(Path(run.path) / store.RECORD)
    (LOG / f"got-{{worker_id}}-{{turn}}.json").write_text(json.dumps({{"key": run.key, "record": record}}))
"""


def test_xdist_workers_train_each_experiment_once_and_different_ones_together(pytester, private_cache,
                                                                               tmp_path, monkeypatch):
    log = tmp_path / "log"
    log.mkdir()
    monkeypatch.setenv("CONCURRENCY_LOG", str(log))
    monkeypatch.delenv("FT_PARALLEL_RUNS")
    pytester.makeconftest('pytest_plugins = ["fixtures.plugin"]')
    pytester.makepyfile(test_requests=SUITE.format(experiments=EXPERIMENTS))
    result = pytester.runpytest_subprocess("-n", str(WORKERS), "--dist", "each", "-p", "no:cacheprovider",
                                           "--ft-seeds", "1", "--ft-no-progress")
    result.assert_outcomes(passed=WORKERS * EXPERIMENTS)
    started = sorted(p.name for p in log.glob("started-*"))
    keys = [name.split("-")[1] for name in started]
    assert len(keys) == EXPERIMENTS == len(set(keys)), f"each experiment should train exactly once: {started}"
    assert len({name.split("-")[2] for name in started}) == EXPERIMENTS, "the trainings should be in different workers"
    assert not list(log.glob("alone-*")), "different experiments did not train at the same time"
    got = [json.loads(p.read_text()) for p in log.glob("got-*.json")]
    assert len(got) == WORKERS * EXPERIMENTS
    for key in keys:
        records = [g["record"] for g in got if g["key"] == key]
        assert len(records) == WORKERS and all(r == records[0] for r in records), "workers got different records"
    assert len(list((private_cache / "runs").glob("*/record.json"))) == EXPERIMENTS
