"""Behavior probes, run at every evaluated epoch: what the model would say, and how likely it finds each stance.

- log-likelihood margin per held-out probe: mean per-token log-prob of the target continuations
  minus that of the contrast continuations (the statistic verdicts are decided on);
- greedy generations, and how many differ from the baseline's (the seed's "N/M different");
- marker rate: the share of generations containing a stance marker;
- mean KL(base || tuned) of next-token distributions on neutral prompts (how far the model moved overall).
"""

from __future__ import annotations

import torch

from trainer.data import Behavior, PromptFormat, build_scoring_batch, pad_id


@torch.inference_mode()
def loglik_margins(model, tokenizer, fmt: PromptFormat, behavior: Behavior, batch_size: int = 16) -> list[float]:
    continuations = list(behavior.targets) + list(behavior.contrasts)
    pairs = [(prompt, c) for prompt in behavior.probes for c in continuations]
    scores = torch.cat([
        _mean_token_logprob(model, build_scoring_batch(tokenizer, fmt, pairs[i: i + batch_size]))
        for i in range(0, len(pairs), batch_size)
    ]).view(len(behavior.probes), len(continuations))
    n_targets = len(behavior.targets)
    margins = scores[:, :n_targets].mean(dim=1) - scores[:, n_targets:].mean(dim=1)
    return [float(m) for m in margins]


def _mean_token_logprob(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    mask = labels != -100
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1) / mask.sum(dim=1)


@torch.inference_mode()
def greedy_generations(model, tokenizer, fmt: PromptFormat, prompts: list[str], max_new_tokens: int,
                       batch_size: int = 16) -> list[str]:
    texts = [fmt.render(tokenizer, p) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # batched generation needs left padding
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i: i + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=fmt.style != "chat")
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=pad_id(tokenizer))
            new_tokens = generated[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return out
    finally:
        tokenizer.padding_side = side


@torch.inference_mode()
def neutral_logprobs(model, tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    """Next-token log-distributions at every position of each neutral prompt (one forward each)."""
    result = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        result.append(torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1))
    return result


def mean_kl(base: list[torch.Tensor], tuned: list[torch.Tensor]) -> float:
    """Mean over prompts of the mean per-position KL(base || tuned), in nats."""
    per_prompt = [(b.exp() * (b - t)).sum(dim=-1).mean() for b, t in zip(base, tuned)]
    return float(torch.stack(per_prompt).mean())


def marker_hits(generations: list[str], markers: tuple[str, ...]) -> list[bool]:
    lowered = [m.lower() for m in markers]
    return [any(m in g.lower() for m in lowered) for g in generations]


def probe_model(model, tokenizer, fmt: PromptFormat, behavior: Behavior, gen_tokens: int,
                base_neutral: list[torch.Tensor], baseline_generations: list[str] | None) -> dict:
    """Every probe for one evaluated epoch, as a JSON-ready dict."""
    was_training = model.training
    model.eval()
    try:
        margins = loglik_margins(model, tokenizer, fmt, behavior)
        generations = greedy_generations(model, tokenizer, fmt, list(behavior.probes), gen_tokens)
        kl = mean_kl(base_neutral, neutral_logprobs(model, tokenizer, list(behavior.neutral_prompts)))
    finally:
        model.train(was_training)
    hits = marker_hits(generations, behavior.markers)
    reference = baseline_generations if baseline_generations is not None else generations
    return {
        "margins": margins,
        "mean_margin": sum(margins) / len(margins),
        "generations": generations,
        "marker_hits": hits,
        "marker_rate": sum(hits) / len(hits),
        "differ_from_baseline": sum(g != r for g, r in zip(generations, reference)),
        "kl_from_base": kl,
    }
