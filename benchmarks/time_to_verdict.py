"""Time to verdict on a CPU: one look's probing and one training epoch against the machine's matmul limit.

For each model: the FLOPs a look needs (counted from the tokens it must compute: 2 x non-embedding parameters per
token, plus 2 x vocabulary x hidden where logits are kept; padding and recomputation are not counted), the
seconds it takes, and the fraction of the measured fp32 matmul peak that makes. The same for one training epoch
(6 x parameters x tokens, the head included). With `--before COMMIT` the probe module of that commit is timed in
the same rounds (before/after ratio, same answers). With `--lm-eval`: the same 44 x 4 scoring requests through
lm-evaluation-harness's Hugging Face backend (`HFLM._loglikelihood_tokens`, what `HFLM.loglikelihood` runs after
tokenizing), same model, same threads: seconds and the largest difference of the log-likelihoods.

Usage: python benchmarks/time_to_verdict.py [--models smollm2-135m gemma3-270m] [--rounds 3]
           [--before 281e2aa] [--lm-eval] [--out benchmarks/time-to-verdict-<date>.json]
`--lm-eval` needs `pip install -e '.[bench]'` (a benchmark-only dependency).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.behavior import load_behavior  # noqa: E402
from trainer.models.sources import resolve_model  # noqa: E402
from trainer.training import probe  # noqa: E402
from trainer.training.batches import PromptFormat  # noqa: E402


def matmul_peak(size: int = 4096, rounds: int = 5) -> float:
    """GFLOP/s of an fp32 square matmul with this process's threads (the best of `rounds`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(rounds))
    return 2 * size**3 / best / 1e9


def _seconds(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def flop_rates(model) -> tuple[int, int]:
    """(FLOPs per token through the body, extra FLOPs per token whose logits are kept)."""
    embedding = model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embedding.numel()
    return 2 * body, 2 * embedding.numel()  # the head has the embedding's shape, tied or not


def look_flops(model, tokenizer, fmt: PromptFormat, behavior, generations: list[str] | None, gen_steps: int) -> dict:
    body, head = flop_rates(model)
    prompts = [len(fmt.prompt_ids(tokenizer, p)) for p in behavior.probes]
    fed = sum(len(fmt.continuation_ids(tokenizer, c)) - 1 for c in behavior.targets + behavior.contrasts)
    neutral = sum(len(tokenizer(p)["input_ids"]) for p in behavior.neutral_prompts)
    parts = {
        "prompts": sum(prompts) * body + len(prompts) * head,  # the last prompt token's logits are kept
        "continuations": len(prompts) * fed * (body + head),
        "neutral prompts": neutral * (body + head),
    }
    if generations is not None:
        parts["greedy answers"] = len(prompts) * (gen_steps - 1) * (body + head)  # the first comes from the prompts
    return parts


def epoch_flops(model, tokenizer, fmt: PromptFormat, behavior) -> int:
    body, head = flop_rates(model)
    tokens = sum(len(fmt.prompt_ids(tokenizer, e.prompt)) + len(fmt.continuation_ids(tokenizer, e.response)) + 1
                 for e in behavior.examples("train"))
    return 3 * tokens * (body + head)  # forward + backward = 3 forwards


def old_probe(commit: str):
    """The probe module as it was at `commit`, loaded beside today's."""
    source = subprocess.run(["git", "show", f"{commit}:trainer/training/probe.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / f"probe_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure_model(name: str, rounds: int, peak: float, before: str | None, lm_eval: bool) -> dict:
    loaded = resolve_model(name).load()
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    behavior = load_behavior("epistemic-stance")
    fmt = PromptFormat(loaded.prompt_style, behavior.prompt_template)
    modules = {"today": probe} | ({f"at {before}": old_probe(before)} if before else {})
    base = {k: m.neutral_logprobs(model, tokenizer, list(behavior.neutral_prompts)) for k, m in modules.items()}
    seconds: dict[str, list[float]] = {f"{k}, {what}": [] for k in modules for what in ("look", "margins only")}
    results = {}
    for _ in range(rounds + 1):  # the first round warms up
        for k, m in modules.items():
            for what, generate in (("look", True), ("margins only", False)):
                started = time.perf_counter()
                results[(k, what)] = m.probe_model(model, tokenizer, fmt, behavior, 24, base[k], None, generate)
                seconds[f"{k}, {what}"].append(time.perf_counter() - started)
    medians = {k: statistics.median(v[1:]) for k, v in seconds.items()}
    today = results[("today", "look")]
    steps = _greedy_steps(model, tokenizer, fmt, behavior)
    out = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "seconds": seconds,
           "median_seconds": medians}
    for what, generate in (("look", True), ("margins only", False)):
        flops = look_flops(model, tokenizer, fmt, behavior, today["generations"] if generate else None, steps)
        total = sum(flops.values())
        out[what] = {"gflop": {k: round(v / 1e9, 1) for k, v in flops.items()}, "total_gflop": round(total / 1e9, 1),
                     "seconds": round(medians[f"today, {what}"], 3),
                     "fraction_of_peak": round(total / medians[f"today, {what}"] / 1e9 / peak, 3)}
    out["greedy steps"] = steps
    if before:
        old = results[(f"at {before}", "look")]
        out["before"] = {"commit": before, "max_margin_difference": max(
            abs(a - b) for a, b in zip(old["margins"], today["margins"])),
            "kl_difference": abs(old["kl_from_base"] - today["kl_from_base"]),
            "same_answers": sum(a == b for a, b in zip(old["generations"], today["generations"])),
            "answers": len(today["generations"]),
            "speedup_look": round(medians[f"at {before}, look"] / medians["today, look"], 2),
            "speedup_margins_only": round(medians[f"at {before}, margins only"] / medians["today, margins only"], 2)}
    out["training epoch"] = _epoch(name, rounds, peak, epoch_flops(model, tokenizer, fmt, behavior))
    out["checkpoint and look"] = _checkpoint_overlap(name, rounds, model, tokenizer, fmt, behavior, base["today"])
    if lm_eval:
        out["lm-eval"] = _against_lm_eval(model, tokenizer, fmt, behavior, rounds)
    return out


def _greedy_steps(model, tokenizer, fmt, behavior) -> int:
    """Decoding steps the greedy loop ran (it stops once every answer has ended)."""
    stop = torch.as_tensor(model.generation_config.eos_token_id).reshape(-1)
    with torch.no_grad():
        batches = probe.prompt_batches(model, tokenizer, fmt, list(behavior.probes))
        return max(probe._greedy_tokens(model, b, 24, stop, probe.pad_id(tokenizer)).shape[1] for b in batches)


def _epoch(name: str, rounds: int, peak: float, flops: int) -> dict:
    from trainer.experiment import Experiment
    from trainer.studies.step_costs import training_step

    _, step = training_step(Experiment(model=name, device="cpu", processes=1))
    step()
    seconds = [_seconds(step) for _ in range(rounds)]
    median = statistics.median(seconds)
    return {"gflop": round(flops / 1e9, 1), "seconds": seconds, "median_seconds": round(median, 3),
            "fraction_of_peak": round(flops / median / 1e9 / peak, 3)}


def _checkpoint_overlap(name: str, rounds: int, model, tokenizer, fmt, behavior, base) -> dict:
    """An evaluated epoch's end: full fine-tuning's checkpoint (weights and AdamW moments) written, then the look
    (as before), against the write done while the look runs (as `session.after_epoch` does now)."""
    from concurrent.futures import ThreadPoolExecutor

    from trainer.experiment import Experiment
    from trainer.studies.step_costs import training_step
    from trainer.training.checkpoint import gather_state, save_checkpoint

    trained, step = training_step(Experiment(model=name, device="cpu", processes=1))
    step()  # AdamW's moments exist
    folder = Path(tempfile.mkdtemp())
    state = gather_state(trained, step.optimizer)

    def write() -> None:
        save_checkpoint(folder / "checkpoint-1", state, 1)  # replaces the previous round's

    def look() -> None:
        probe.probe_model(model, tokenizer, fmt, behavior, 24, base, None, True)

    seconds: dict[str, list[float]] = {"write alone": [], "look alone": [], "write, then look": [],
                                       "write during look": []}
    with ThreadPoolExecutor(1) as writer:
        def both() -> None:
            written = writer.submit(write)
            look()
            written.result()

        for _ in range(rounds):
            seconds["write alone"].append(_seconds(write))
            seconds["look alone"].append(_seconds(look))
            seconds["write, then look"].append(_seconds(lambda: (write(), look())))
            seconds["write during look"].append(_seconds(both))
    written_bytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder)
    return {"checkpoint_bytes": written_bytes, "seconds": seconds,
            "median_seconds": {k: round(statistics.median(v), 3) for k, v in seconds.items()}}


def _against_lm_eval(model, tokenizer, fmt: PromptFormat, behavior, rounds: int) -> dict:
    """Our continuation scoring against HFLM's on the same token ids (44 prompts x 4 openers)."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        raise SystemExit(f"--lm-eval needs lm-evaluation-harness ({error}): "
                         ".venv/bin/pip install -e '.[bench]'") from None

    lm = HFLM(pretrained=model, tokenizer=tokenizer, device="cpu", batch_size=64)
    texts = list(behavior.targets + behavior.contrasts)
    continuations = [fmt.continuation_ids(tokenizer, t) for t in texts]
    prompts = [fmt.prompt_ids(tokenizer, p) for p in behavior.probes]
    requests = [(("", ""), p, c) for p in prompts for c in continuations]

    def ours() -> torch.Tensor:
        with torch.no_grad():
            batches = probe.prompt_batches(model, tokenizer, fmt, list(behavior.probes))
            means = probe.in_probe_order(batches, [probe.continuation_logprobs(model, b, continuations)
                                                   for b in batches])
        return means * torch.tensor([len(c) for c in continuations])  # sums, as lm-eval reports them

    def theirs() -> torch.Tensor:
        scored = lm._loglikelihood_tokens(requests, disable_tqdm=True)
        return torch.tensor([s for s, _ in scored]).view(len(prompts), len(continuations))

    times: dict[str, list[float]] = {"ours": [], "lm-eval HFLM": []}
    values = {}
    for index in range(rounds + 1):
        for label, call in (("ours", ours), ("lm-eval HFLM", theirs)):
            started = time.perf_counter()
            values[label] = call()
            if index:
                times[label].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"requests": len(requests), "batch_size": 64, "seconds": times, "median_seconds": medians,
            "ratio_ours_to_theirs": round(medians["ours"] / medians["lm-eval HFLM"], 3),
            "max_loglikelihood_difference": float((values["ours"] - values["lm-eval HFLM"]).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="a commit whose probe module is timed beside today's")
    parser.add_argument("--lm-eval", action="store_true", help="compare with lm-evaluation-harness's HFLM")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    peak = matmul_peak()
    report = {"threads": torch.get_num_threads(), "matmul_peak_gflops": round(peak, 1),
              "models": [measure_model(m, args.rounds, peak, args.before, args.lm_eval) for m in args.models]}
    report["matmul_peak_gflops_after"] = round(matmul_peak(), 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
