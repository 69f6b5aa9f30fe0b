"""The findings ledger: figures compared with a committed baseline by their statistical rules, moves said
plainly, one update command, and a model absent here never counted as moved."""

import json

import pytest
from inner_suite import findings_suite, run_findings  # tests/ is on sys.path (pytest's prepend import mode)

from fixtures.ledger import kept_where_not_measured
from trainer.ledger import figures
from trainer.ledger.compare import differs, moves

HEADER = '''
import pytest
from trainer import Experiment

def tiny(lr, epochs=2, **kw):
    return Experiment(model="tiny-llama", epochs=epochs, eval_every=2, lr=lr, generate=False, **kw)
'''

FINDING = '''
@pytest.mark.finding("training at lr {lr} shifts the tiny model")
def test_shifts(finetune, expect):
    expect(finetune(tiny({lr}))).shifts(by_epoch=2)
'''


def entry(**named) -> dict:
    return figures.entry("subject", True, named)


def test_each_rule_says_when_a_figure_moved():
    baseline = entry(onset=figures.exact(2, "epoch"), gain=figures.interval(0.30, 0.25, 0.35, "nats/token"),
                     optimizer=figures.relative(1000, 0.02, "bytes"), seconds=figures.noted(1.0, "s"))
    same = entry(onset=figures.exact(2, "epoch"), gain=figures.interval(0.34, 0.3, 0.4, "nats/token"),
                 optimizer=figures.relative(1019, 0.02, "bytes"), seconds=figures.noted(9.0, "s"))
    assert moves(baseline, same) == []
    moved = entry(onset=figures.exact(4, "epoch"), gain=figures.interval(0.12, 0.1, 0.14, "nats/token"),
                  optimizer=figures.relative(1021, 0.02, "bytes"), seconds=figures.noted(9.0, "s"))
    words = [m.words() for m in moves(baseline, moved)]
    assert words == ["onset 2 -> 4", "gain +0.30 -> +0.12 nats/token", "optimizer 1000 B -> 1021 B"]


def test_a_figure_of_a_model_not_measured_here_is_not_a_move_but_a_vanished_one_is():
    baseline = entry(**{"phi-2 onset epoch": figures.exact(9, "epoch"), "smollm2 onset": figures.exact(2),
                        "device optimizer": figures.relative(1000, 0.02, "bytes")})
    now = figures.entry("subject", False, {"smollm2 onset": figures.exact(2)}, not_measured=("phi-2",))
    assert [(m.name, m.why) for m in moves(baseline, now)] == [("device optimizer", "no longer measured")]


def test_the_verdict_is_compared_only_over_the_same_models():
    baseline = entry(**{"a onset epoch": figures.exact(2, "epoch")})
    fewer = figures.entry("subject", False, {"a onset epoch": figures.exact(2, "epoch")}, not_measured=("b",))
    assert moves(baseline, fewer) == []
    assert [m.words() for m in moves(baseline, figures.entry("subject", False, {}))] == [
        "verdict held -> not held", "a onset epoch 2 -> none"]


def test_an_interval_with_one_bound_is_one_sided_and_equal_looking_figures_show_more_digits():
    baseline = entry(gain=figures.interval(0.3, None, 0.31, "nats/token"))
    assert moves(baseline, entry(gain=figures.interval(-5.0, 0, 0, "nats/token"))) == []
    [move] = moves(entry(gain=figures.interval(0.3, 0.3, 0.3, "nats/token")),
                   entry(gain=figures.interval(0.3001, 0, 1, "nats/token")))
    assert move.words() == "gain +0.300000 -> +0.300100 nats/token"


def test_recording_rewrites_an_entry_with_a_new_figure_or_subject_but_comparing_does_not_fail_on_them():
    baseline = entry(onset=figures.exact(2))
    grown = entry(onset=figures.exact(2), peak=figures.relative(5, 0.02))
    assert moves(baseline, grown) == [] and differs(baseline, grown)
    assert differs(baseline, figures.entry("another subject", True, {"onset": figures.exact(2)}))
    assert not differs(baseline, entry(onset=figures.exact(2)))


def test_the_baseline_carries_its_own_tolerance():
    """What counts as moved is what was committed: a baseline's interval, not today's."""
    baseline = entry(gain=figures.interval(0.30, 0.29, 0.31))
    assert moves(baseline, entry(gain=figures.interval(0.33, 0.0, 1.0)))[0].why.startswith("outside the baseline")


def test_measuring_fewer_models_than_the_baseline_keeps_its_verdict_and_summary_but_compares_the_rest():
    baseline = figures.entry("curve over 2 models", True, {"a onset epoch": figures.exact(2), "b onset epoch":
                             figures.exact(4), "spearman rho": figures.noted(1.0)})
    fewer = figures.entry("curve over 1 models", False, {"a onset epoch": figures.exact(2),
                          "spearman rho": figures.noted(None)}, not_measured=("b",))
    merged = kept_where_not_measured(baseline, fewer)
    assert merged == baseline and not differs(baseline, merged)
    moved = kept_where_not_measured(baseline, fewer | {"figures": fewer["figures"] | {"a onset epoch":
                                                                                    figures.exact(6)}})
    assert [m.words() for m in moves(baseline, moved)] == ["a onset epoch 2 -> 6"]
    assert moved["figures"]["verdict"]["value"] == "held" and "not measured" not in moved


@pytest.fixture
def suite(pytester, private_cache):
    return findings_suite(pytester)


def run(suite, body, *args):
    return run_findings(suite, HEADER + body, "--ft-seeds", "1", *args)


def baseline_file(suite):
    return suite.path / "__snapshots__" / "test_findings" / "test_shifts.json"


def test_a_perturbed_finding_is_flagged_as_moved_until_the_baseline_is_updated(suite):
    first = run(suite, FINDING.format(lr="1e-3"))
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*has no baseline in the ledger*record it with .venv/bin/pytest "
                                "'test_findings.py::test_shifts' --snapshot-update*",
                                "NOT IN THE LEDGER*(1)", "  test_shifts: *"])

    recorded = run(suite, FINDING.format(lr="1e-3"), "--snapshot-update")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["ledger: 1 finding(s) recorded or updated*"])
    stored = json.loads(baseline_file(suite).read_text())
    assert stored["figures"]["onset epoch"] == {"value": 2, "rule": "exact", "unit": "epoch"}
    run(suite, FINDING.format(lr="1e-3")).assert_outcomes(passed=1)

    allure = suite.path / "allure"
    moved = run(suite, FINDING.format(lr="2e-3"), "--alluredir", str(allure))  # it still holds; its figures moved
    moved.assert_outcomes(failed=1)
    result = json.loads(next(allure.glob("*-result.json")).read_text())
    assert result["statusDetails"]["message"].startswith("fixtures.ledger.FindingMoved: finding moved: ")
    attached = [a["source"] for a in result["attachments"] if a["name"] == "moved: baseline and now"]
    both = json.loads((allure / attached[0]).read_text())
    gain = "seed 0 gain at the deciding look"
    assert both["baseline"]["figures"][gain]["value"] != both["now"]["figures"][gain]["value"]
    moved.stdout.fnmatch_lines(["*finding moved: epistemic-stance on tiny-llama*",
                                "*seed 0 gain at the deciding look +* -> +* nats/token*outside the baseline's 95% "
                                "interval*",
                                "*= findings =*", "MOVED against the ledger*(1)",
                                "  test_shifts: epistemic-stance on tiny-llama*: *-> *"])

    run(suite, FINDING.format(lr="2e-3"), "--snapshot-update").assert_outcomes(passed=1)
    run(suite, FINDING.format(lr="2e-3")).assert_outcomes(passed=1)


def test_an_edited_baseline_figure_is_reported_with_both_figures(suite):
    run(suite, FINDING.format(lr="1e-3"), "--snapshot-update").assert_outcomes(passed=1)
    stored = json.loads(baseline_file(suite).read_text())
    stored["figures"]["onset epoch"]["value"] = 4
    baseline_file(suite).write_text(json.dumps(stored))
    moved = run(suite, FINDING.format(lr="1e-3"))
    moved.assert_outcomes(failed=1)
    moved.stdout.fnmatch_lines(["*onset epoch 4 -> 2  (changed)*"])


XFAIL_FINDING = '''
@pytest.mark.finding("a claim the data contradicts")
@pytest.mark.xfail(strict=True, reason="measured: it does not hold")
def test_shifts(finetune, expect):
    expect(finetune(tiny({lr}))).{question}
'''


@pytest.mark.parametrize("question, recorded, rerun_lr, moved", [
    # recorded while the claim held (an XPASS), then it stops holding: not a silent xfail
    ("shifts(by_epoch=2)", "failed", "0.0", "*verdict held -> not held*"),
    # recorded as contradicted, then the claim holds
    ("does_not_shift(through_epoch=2)", "xfailed", "0.0", "*verdict not held -> held*"),
    # still contradicted, but its figures moved: news, not the claim failing again
    ("does_not_shift(through_epoch=2)", "xfailed", "2e-3", "*seed 0 gain at the deciding look*outside*"),
], ids=["held-to-not-held", "not-held-to-held", "figures-moved"])
def test_a_strict_xfail_whose_ledger_entry_moved_fails_instead_of_xfailing(suite, question, recorded, rerun_lr,
                                                                          moved):
    run(suite, XFAIL_FINDING.format(lr="1e-3", question=question), "--snapshot-update").assert_outcomes(
        **{recorded: 1})
    result = run(suite, XFAIL_FINDING.format(lr=rerun_lr, question=question))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*FindingMoved: finding moved*", moved])


def test_without_syrupy_the_session_says_what_to_install_or_pass(suite):
    result = run(suite, FINDING.format(lr="1e-3"), "-p", "no:syrupy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs the syrupy plugin*--ft-no-ledger*"])


def test_a_missing_model_keeps_its_baseline_untouched_and_is_not_moved(suite, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf"))
    body = '''
@pytest.mark.finding("phi-2 shifts")
def test_shifts(finetune, expect):
    expect(finetune(Experiment(model="phi-2"))).shifts(by_epoch=10)
'''
    path = baseline_file(suite)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(figures.entry("phi-2", True, {"onset epoch": figures.exact(9, "epoch")}), indent=2))
    before = path.read_text()
    for extra in ((), ("--snapshot-update",)):
        result = run(suite, body, *extra)
        result.assert_outcomes(skipped=1)
        assert result.ret == 0
        assert "MOVED" not in result.stdout.str()
        assert path.read_text() == before


def test_without_the_ledger_baselines_are_neither_read_nor_unused_and_updating_with_it_is_refused(suite):
    run(suite, FINDING.format(lr="1e-3"), "--snapshot-update").assert_outcomes(passed=1)
    before = baseline_file(suite).read_text()
    result = run(suite, FINDING.format(lr="2e-3"), "--ft-no-ledger")
    result.assert_outcomes(passed=1)
    assert result.ret == 0 and baseline_file(suite).read_text() == before
    refused = run(suite, FINDING.format(lr="1e-3"), "--ft-no-ledger", "--snapshot-update")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--ft-no-ledger with --snapshot-update*"])


def test_a_flipped_verdict_is_a_failure_with_its_moves_and_a_broken_file_is_named_with_the_fix(suite):
    run(suite, FINDING.format(lr="1e-3"), "--snapshot-update").assert_outcomes(passed=1)
    flipped = run(suite, FINDING.format(lr="0.0"))
    flipped.assert_outcomes(failed=1)
    flipped.stdout.fnmatch_lines(["*ClaimNotHeld*did not shift by epoch 2*", "*verdict held -> not held*",
                                  "FAILED (the verdict flipped, or the run broke) (1)"])
    assert "MOVED" not in flipped.stdout.str()
    for text in ("<<<<<<< HEAD\n{}", "[]"):
        baseline_file(suite).write_text(text)
        run(suite, FINDING.format(lr="1e-3")).stdout.fnmatch_lines(["*BrokenBaseline: the ledger file*"])
    broken = run(suite, FINDING.format(lr="1e-3"))
    broken.assert_outcomes(failed=1)
    broken.stdout.fnmatch_lines(["*BrokenBaseline: the ledger file *test_shifts.json cannot be read*delete it and "
                                 "record it again with .venv/bin/pytest 'test_findings.py::test_shifts' "
                                 "--snapshot-update*"])
    run(suite, FINDING.format(lr="1e-3"), "--snapshot-update").assert_outcomes(passed=1)
    assert json.loads(baseline_file(suite).read_text())["figures"]["verdict"]["value"] == "held"


def test_no_entry_is_deleted_by_an_update_or_failed_over_when_its_test_did_not_run(suite):
    """A test that is gone, stopped early or only collected keeps its entry; it is listed, never deleted."""
    run(suite, FINDING.format(lr="1e-3"), "--snapshot-update").assert_outcomes(passed=1)
    before = baseline_file(suite).read_text()
    assert run(suite, FINDING.format(lr="1e-3"), "--collect-only").ret == 0
    renamed = FINDING.format(lr="1e-3").replace("def test_shifts", "def test_renamed")
    result = run(suite, renamed, "--snapshot-update")
    result.assert_outcomes(passed=1)
    assert result.ret == 0 and baseline_file(suite).read_text() == before
    result.stdout.fnmatch_lines(["*1 snapshot unused*"])
    assert run(suite, renamed).ret == 0
