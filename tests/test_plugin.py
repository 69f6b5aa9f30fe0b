"""The pytest layer, driven the way a user drives it (pytester runs an inner pytest session)."""

import pytest
from inner_suite import findings_suite, run_findings  # tests/ is on sys.path (pytest's prepend import mode)

HEADER = '''
import pytest
from trainer import Experiment

def tiny(lr, epochs=4, **kw):
    return Experiment(model="tiny-llama", epochs=epochs, eval_every=2, lr=lr, gen_tokens=4, **kw)
'''


@pytest.fixture
def suite(pytester, private_cache):
    # The ledger (baselines beside the findings) has its own tests in tests/test_ledger.py.
    return findings_suite(pytester, "--ft-no-ledger")


def run(suite, body, *args):
    return run_findings(suite, HEADER + body, *args)


def test_options_are_one_group_with_defaults_in_help(suite):
    text = " ".join(suite.runpytest("--help").stdout.str().split())  # undo the help's line wrapping
    group = text[text.index("fine-tuning behavior findings:"):]
    for expected in ("--ft-cache-dir=DIR", "--ft-model-dir=DIR", "deciding a shift (default: 0.01)",
                     "counts as a shift (default: 0.1)", "--ft-no-progress",
                     "--ft-min-marker-gain=SHARE", "--ft-differ-share=SHARE", "--ft-kl-floor=NATS",
                     "--ft-seeds=N", "majority of them"):
        assert expected in group, expected


def test_a_true_finding_passes_and_a_false_one_fails_with_the_measurements(suite):
    result = run(suite, '''
@pytest.mark.finding("training at lr 1e-3 shifts the tiny model")
def test_shifts(finetune, expect):
    expect(finetune(tiny(1e-3))).shifts(by_epoch=4)

def test_lr0_shifts(finetune, expect):
    expect(finetune(tiny(0.0))).shifts(by_epoch=4)

def test_lr0_does_not_shift(finetune, expect):
    expect(finetune(tiny(0.0))).does_not_shift(through_epoch=4)
''')
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*did not shift by epoch 4*",
                                 "*epoch   4: 0/3 seeds shifted; across seeds*+0.000, p 1 -> no shift*",
                                 "*seed 0: gain +0.000*CI +0.000, +0.000*, p 1*no shift*",
                                 "*onset 95% interval*", "*Likely causes*"])


def test_a_claim_that_no_configuration_shifts_is_declared_over_a_sweep(suite):
    result = run(suite, '''
@pytest.mark.finding("no learning rate shifts the tiny model")
def test_none_shift(finetune, expect):
    expect([finetune(tiny(lr)) for lr in (0.0, 1e-3, 2e-3)]).none_shifts(by_epoch=4)

def test_not_trials(finetune, expect):
    expect([tiny(0.0)]).none_shifts(by_epoch=4)
''')
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*full fine-tuning, lr=0.001 shifted * at epoch 2, so the claim that no "
                                 "configuration shifts is contradicted*",
                                 "*- full fine-tuning, lr=0: no shift through epoch 4*",
                                 "*not trained, the claim being contradicted already: full fine-tuning, lr=0.002*",
                                 "*expect() takes what finetune() returned, or a non-empty list of those*"])


def test_contradicted_claim_is_kept_as_strict_xfail_and_flags_a_flip(suite):
    result = run(suite, '''
@pytest.mark.xfail(strict=True, reason="measured: no shift at lr=0")
def test_claim_contradicted(finetune, expect):
    expect(finetune(tiny(0.0))).shifts(by_epoch=4)

@pytest.mark.xfail(strict=True, reason="if this passes, the finding flipped")
def test_claim_that_flipped(finetune, expect):
    expect(finetune(tiny(1e-3))).shifts(by_epoch=4)
''')
    result.assert_outcomes(xfailed=1, failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*"])


def test_a_full_disk_fails_findings_and_never_counts_as_a_contradicted_claim(suite, monkeypatch, private_cache):
    import errno

    from trainer.cache import store

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", disk_full)
    result = run(suite, '''
@pytest.mark.xfail(strict=True, reason="measured: no shift at lr=0")
def test_claim_contradicted(finetune, expect):
    expect(finetune(tiny(0.0))).shifts(by_epoch=4)

def test_claim_held(finetune, expect):
    expect(finetune(tiny(0.0))).does_not_shift(through_epoch=4)
''')
    result.assert_outcomes(failed=2)  # not xfailed: the disk, not the data, stopped it
    result.stdout.fnmatch_lines(["*CacheWriteError: cannot write the cache at*No space left on device*bytes*"])
    assert not list(private_cache.glob("runs/*/record.json"))


def test_missing_weights_skip_with_how_to_under_their_finding(suite, monkeypatch, tmp_path):
    import json

    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf"))
    result = run(suite, '''
@pytest.mark.finding("phi-2 shifts")
def test_phi2(finetune, expect):
    expect(finetune(Experiment(model="phi-2"))).shifts(by_epoch=10)
''', "-rs", "--alluredir", str(tmp_path / "allure"))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*microsoft/phi-2*--ft-model-dir*"])
    report = next(json.loads(p.read_text()) for p in (tmp_path / "allure").glob("*-result.json"))
    labels = {(label["name"], label["value"]) for label in report["labels"]}
    assert ("epic", "phi-2 shifts") in labels and ("feature", "phi-2") in labels


def test_bad_declarations_fail_at_collection_naming_the_value(suite):
    result = run(suite, '''
@pytest.mark.parametrize("exp", [tiny(-1.0, epochs=0)])
def test_bad(finetune, expect, exp):
    pass
''')
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*epochs=0: must be an integer >= 1*", "*lr=-1.0: must be a number >= 0*"])


def test_misused_finding_marker_is_a_usage_error(suite):
    result = run(suite, '''
@pytest.mark.finding
def test_x():
    pass
''')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*@pytest.mark.finding('the claim, in words')*"])


def test_asking_beyond_the_trained_epochs_is_misuse(suite):
    result = run(suite, '''
def test_x(finetune, expect):
    expect(finetune(tiny(1e-3, epochs=2))).shifts(by_epoch=6)
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ExpectationMisuse*outside this experiment (epochs=2)*epochs=6*"])


def test_unknown_marker_is_rejected(suite):
    result = run(suite, '''
@pytest.mark.slwo
def test_x():
    pass
''')
    result.stdout.fnmatch_lines(["*'slwo' not found in `markers`*"])


def test_bad_threshold_option_is_a_usage_error(suite):
    result = suite.runpytest("--ft-alpha", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*alpha=2.0: must be in (0, 1)*"])


def test_bad_parallel_runs_option_is_a_usage_error(suite):
    result = suite.runpytest("--ft-parallel-runs", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ft-parallel-runs=0: must be a whole number >= 1*"])


def test_bad_processes_option_is_a_usage_error(suite):
    result = suite.runpytest("--ft-processes", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ft-processes=0: must be a whole number >= 1*"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA; the refusal needs none")
def test_a_device_this_machine_lacks_stops_the_session_with_the_fix(suite):
    result = suite.runpytest("--ft-device", "cuda")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ft-device='cuda'*", "*no cuda device*use device='auto' or 'cpu'*"])


def test_allure_results_carry_labels_and_evidence(suite, tmp_path):
    import json

    results = tmp_path / "allure"
    run(suite, '''
@pytest.mark.finding("tiny shifts")
def test_shifts(finetune, expect):
    expect(finetune(tiny(1e-3))).shifts(by_epoch=4)
''', "--alluredir", str(results)).assert_outcomes(passed=1)
    result = next(json.loads(p.read_text()) for p in results.glob("*-result.json"))
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert ("epic", "tiny shifts") in labels and ("feature", "tiny-llama") in labels
    names = {a["name"] for a in result["attachments"]}
    # decided at the first look (epoch 2 of 4), so the evidence is from epoch 2
    assert {"shift by epoch", "probes: epoch 0 vs 2", "per-epoch metrics and verdicts", "verdict per seed and epoch",
            "decision"} <= names
    assert {p["name"] for p in result["parameters"]} >= {"model", "lr", "epochs"}


def test_unknown_metric_is_misuse(suite):
    result = run(suite, '''
def test_x(finetune, expect):
    expect(finetune(tiny(1e-3, epochs=2))).shifts_first_in("vibes", before="markers", by_epoch=2)
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ExpectationMisuse: unknown metric(s)*vibes*known*margin*markers*differs*kl*"])


def test_inertia_curve_lists_missing_models_and_writes_its_evidence(suite, tmp_path):
    import json

    results = tmp_path / "allure"
    result = run(suite, '''
@pytest.mark.finding("bigger tiny models are slower")
def test_curve(inertia_curve, expect_curve):
    from trainer.stats.curve import ReportedOnset

    reported = (ReportedOnset("phi-2", 2_700_000_000, 10, at_least=True),)
    curve = inertia_curve(tiny(1e-3, epochs=2), ["tiny-llama", "tiny-phi", "phi-2"], by_epoch=2, reported=reported)
    assert [p.model for p in curve.points] == ["tiny-llama", "tiny-phi"]
    assert curve.missing and curve.missing[0].startswith("phi-2:")
    expect_curve(curve).slower_with_size()
''', "--ft-seeds", "1", "--alluredir", str(results))
    result.assert_outcomes(failed=1)  # two points: no correlation can be shown, and the message says why
    result.stdout.fnmatch_lines(["*onset does not grow with size: Spearman rho nan*", "*tiny-llama*params*onset*",
                                 "*not measured: phi-2*"])
    written = sorted(p.name for p in (suite.path / "reports" / "inertia").iterdir())
    assert written == ["onset-vs-size-lr0.001-2-of-3-models-measured-movement.png",
                       "onset-vs-size-lr0.001-2-of-3-models-measured.csv",
                       "onset-vs-size-lr0.001-2-of-3-models-measured.png"], "the title counts what was measured"
    attachments = [a for p in results.glob("*-result.json") for a in json.loads(p.read_text())["attachments"]]
    assert {"inertia curve: onset", "inertia curve: rate and steps to the floor", "onset and movement per model",
            "curve statistics"} <= {a["name"] for a in attachments}
    statistics = next(a["source"] for a in attachments if a["name"] == "curve statistics")
    assert "notebook reports phi-2 (2700M params): onset 10+ epochs (reported, not measured here)" in \
        (results / statistics).read_text()


def test_training_time_findings_tell_projections_from_measurements(suite, tmp_path):
    import json

    results = tmp_path / "allure"
    result = run(suite, '''
@pytest.mark.finding("phi-2 takes seconds to train (at a tiny model's throughput it takes hours)")
def test_phi2_seconds(training_times, expect_time):
    expect_time(training_times(tiny(1e-3), ["tiny-llama", "phi-2"])).takes("phi-2", epochs=10, unit="seconds")

def test_tiny_seconds(training_times, expect_time):
    expect_time(training_times(tiny(1e-3), ["tiny-llama", "phi-2"])).takes("tiny-llama", epochs=1, unit="seconds")
''', "--alluredir", str(results))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*10 epochs of full fine-tuning, lr=0.001, 5-example batches, fp32, CPU on phi-2 "
                                 "(2780M params*projected from FLOPs, not measured*which is *; claimed: seconds*"])
    attached = {a["name"] for p in results.glob("*-result.json") for a in json.loads(p.read_text())["attachments"]}
    assert {"seconds per epoch by size", "seconds per epoch"} <= attached


def test_error_rates_fixture_measures_placebo_pairs_and_power(suite):
    result = run(suite, '''
def test_rates(error_rates, expect_rate):
    rates = error_rates(tiny(1e-3, epochs=2), replicates=6, by_epoch=2)
    assert rates.false_positive.trials == 20 and rates.power.trials == 20  # C(6,3) ways to cast 3 seeds
    expect_rate(rates.power, "tiny power").at_least(0.9)
    expect_rate(rates.false_positive, "tiny false alarms").at_most(0.0)

def test_too_few_replicates(error_rates):
    error_rates(tiny(1e-3, epochs=2), replicates=5, by_epoch=2)
''')
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*replicates=5: a placebo experiment needs 3 null runs as seeds*at least 6*"])


def test_rate_resolution_fixture_splits_one_model_and_compares_two(suite, tmp_path):
    import json

    results = tmp_path / "allure"
    result = run(suite, '''
def test_resolution(rate_resolution, expect_rate):
    first = tiny(1e-3, epochs=2)
    second = Experiment(model="tiny-qwen2", epochs=2, eval_every=2, lr=1e-3, gen_tokens=4)
    resolution = rate_resolution(first, second, replicates=6)
    assert resolution.false_positive.trials == 20 and resolution.power.trials == 400
    expect_rate(resolution.false_positive, "one tiny model told from itself").at_most(0.25)
''', "--alluredir", str(results))
    result.assert_outcomes(passed=1)
    attached = {a["name"] for p in results.glob("*-result.json") for a in json.loads(p.read_text())["attachments"]}
    assert "the rate's resolution at lr 0.001" in attached


def test_options_reach_the_library_as_one_settings_object_not_the_environment(suite, tmp_path, monkeypatch):
    """--ft-cache-dir and --ft-parallel-runs become the active Settings inside the session (the environment
    is left alone), and the caller's settings come back when the session ends."""
    import os

    from trainer import settings

    monkeypatch.delenv("FT_CACHE_DIR", raising=False)
    monkeypatch.delenv("FT_PARALLEL_RUNS", raising=False)
    before = settings.active()
    chosen = tmp_path / "chosen-cache"
    result = run(suite, f'''
import os
from trainer import settings
from trainer.cache import store

def test_settings_are_the_options():
    assert str(store.cache_root()) == {str(chosen)!r} and settings.active().workers() == 1
    assert "FT_CACHE_DIR" not in os.environ and "FT_PARALLEL_RUNS" not in os.environ
''', "--ft-cache-dir", str(chosen), "--ft-parallel-runs", "1")
    result.assert_outcomes(passed=1)
    assert settings.active() == before and "FT_CACHE_DIR" not in os.environ


def test_a_bad_cache_cap_option_is_a_usage_error_naming_the_option(suite):
    result = run(suite, "def test_nothing():\n    pass\n", "--ft-cache-max-gb", "-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ft-cache-max-gb=-3.0: must be > 0 GB*"])


def test_the_run_ends_with_a_summary_of_findings_and_their_headlines(suite, monkeypatch, tmp_path):
    """Held, contradicted (strict xfail) and not measured, each with what it measured; the Allure report's
    Environment panel names the libraries, the device and the commit."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf"))
    result = run(suite, '''
@pytest.mark.finding("training at lr 1e-3 shifts the tiny model")
def test_shifts(finetune, expect):
    expect(finetune(tiny(1e-3, epochs=2, generate=False))).shifts(by_epoch=2)

@pytest.mark.finding("lr 0 shifts the tiny model")
@pytest.mark.xfail(strict=True, reason="lr 0 moves nothing")
def test_lr0_shifts(finetune, expect):
    expect(finetune(tiny(0.0, epochs=2, generate=False))).shifts(by_epoch=2)

@pytest.mark.finding("phi-2 shifts")
def test_phi2(finetune, expect):
    expect(finetune(Experiment(model="phi-2"))).shifts(by_epoch=10)
''', "--ft-seeds", "1", "--alluredir", str(tmp_path / "allure"))
    result.assert_outcomes(passed=1, xfailed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*= findings =*",
        "held (1)",
        "  test_shifts: epistemic-stance on tiny-llama shifted at epoch 2 (epoch 2: mean gain +*",
        "contradicted by the data (strict xfail) (1)",
        "  test_lr0_shifts: epistemic-stance on tiny-llama did not shift by epoch 2 (epoch 2: mean gain *",
        "not measured (1): phi-2 (1); `pytest -rs` says how to provide what is missing",
    ])
    environment = (tmp_path / "allure" / "environment.properties").read_text()
    for key in ("torch.version=", "transformers.version=", "peft.version=", "accelerate.version=", "device=cpu",
                "cores=", "commit="):
        assert key in environment, key
