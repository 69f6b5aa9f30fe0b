"""Behavior probes, run at every evaluated epoch: what the model would say, and how likely it finds each stance.

- log-likelihood margin per held-out probe: mean per-token log-prob of the target continuations
  minus that of the contrast continuations (the statistic verdicts are decided on);
- greedy generations, and how many differ from the baseline's (the notebook's "N/M different");
- marker rate: the share of generations containing a stance marker;
- mean KL(base || tuned) of next-token distributions on neutral prompts (how far the model moved overall).
"""

from __future__ import annotations

import copy
import math

import torch

from trainer.behavior import Behavior
from trainer.training.batches import PromptFormat, pad_id


@torch.no_grad()  # not inference_mode: a sharded model gathers its weights in place while probed
def loglik_margins(model, tokenizer, fmt: PromptFormat, behavior: Behavior, batch_size: int = 48,
                   device: torch.device | None = None) -> list[float]:
    continuations = [fmt.continuation_ids(tokenizer, c) for c in behavior.targets + behavior.contrasts]
    scores = torch.cat([
        continuation_logprobs(model, tokenizer, fmt, list(behavior.probes[i: i + batch_size]), continuations, device)
        for i in range(0, len(behavior.probes), batch_size)
    ])
    n_targets = len(behavior.targets)
    margins = scores[:, :n_targets].mean(dim=1) - scores[:, n_targets:].mean(dim=1)
    return [float(m) for m in margins]


def continuation_logprobs(model, tokenizer, fmt: PromptFormat, prompts: list[str],
                          continuations: list[list[int]], device: torch.device | None = None) -> torch.Tensor:
    """[prompts, continuations] mean per-token log-prob of each continuation after each prompt.

    Each prompt is encoded once (left-padded, explicit positions); each continuation is then fed
    after a copy of that KV cache as one unpadded batch, without its last token (nothing follows
    it). So only positions that are scored pay for the LM head: with Gemma's 262k-token vocabulary
    the head dominates, and padding continuations to a common width wasted ~40% of it. `device`: where the
    model computes (a model offloaded to the host computes on the GPU); default: where its weights are.
    """
    prompt_ids, prompt_mask = _left_pad([fmt.prompt_ids(tokenizer, p) for p in prompts], pad_id(tokenizer),
                                        device or model.device)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=_positions(prompt_mask),
                use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    lengths = prompt_mask.sum(dim=1, keepdim=True)
    return torch.stack([_mean_continuation_logprob(model, out.past_key_values, prompt_mask, lengths, first, ids)
                        for ids in continuations], dim=1)


def _mean_continuation_logprob(model, prompt_cache, prompt_mask: torch.Tensor, lengths: torch.Tensor,
                               first: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Mean log-prob of one continuation after every prompt; the first token's comes from the prompt pass."""
    tokens = torch.tensor(ids, device=prompt_mask.device).expand(len(prompt_mask), -1)
    total = first[:, ids[0]]
    if len(ids) > 1:
        fed = tokens[:, :-1]  # token j predicts token j + 1
        rest = model(input_ids=fed, attention_mask=torch.cat([prompt_mask, torch.ones_like(fed)], dim=1),
                     position_ids=lengths + torch.arange(fed.shape[1], device=fed.device),
                     past_key_values=copy.deepcopy(prompt_cache), use_cache=True)
        later = torch.log_softmax(rest.logits.float(), dim=-1).gather(2, tokens[:, 1:, None]).squeeze(-1)
        total = total + later.sum(dim=1)
    return total / len(ids)


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Left padding must not shift the real tokens' positions (RoPE), so count them from 0."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


@torch.no_grad()  # not inference_mode: a sharded model gathers its weights in place while probed
def greedy_generations(model, tokenizer, fmt: PromptFormat, prompts: list[str], max_new_tokens: int,
                       batch_size: int = 64, device: torch.device | None = None) -> list[str]:
    texts = [fmt.render(tokenizer, p) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # batched generation needs left padding
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i: i + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=fmt.style != "chat").to(device or model.device)
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=pad_id(tokenizer))
            new_tokens = generated[:, enc["input_ids"].shape[1]:]
            out += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return out
    finally:
        tokenizer.padding_side = side


@torch.no_grad()  # not inference_mode: a sharded model gathers its weights in place while probed
def neutral_logprobs(model, tokenizer, prompts: list[str], device: torch.device | None = None) -> list[torch.Tensor]:
    """Next-token log-distributions at every position of each neutral prompt (one forward each), on the CPU
    (the base model's are kept for the whole run)."""
    result = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device or model.device)
        result.append(torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1).cpu())
    return result


def mean_kl(base: list[torch.Tensor], tuned: list[torch.Tensor]) -> float:
    """Mean over prompts of the mean per-position KL(base || tuned), in nats."""
    per_prompt = [(b.exp() * (b - t)).sum(dim=-1).mean() for b, t in zip(base, tuned)]
    return float(torch.stack(per_prompt).mean())


def marker_hits(generations: list[str], markers: tuple[str, ...]) -> list[bool]:
    lowered = [m.lower() for m in markers]
    return [any(m in g.lower() for m in lowered) for g in generations]


def probe_model(model, tokenizer, fmt: PromptFormat, behavior: Behavior, gen_tokens: int,
                base_neutral: list[torch.Tensor], baseline_generations: list[str] | None,
                generate: bool = True, device: torch.device | None = None) -> dict:
    """Every probe for one evaluated epoch, as a JSON-ready dict. Text probes only when `generate` and the
    model's logits are finite: a run that went non-finite is still probed wherever it can be (the
    notebook's "test behavior despite NaN"); non-finite margins stay in the record as NaN."""
    was_training = model.training
    model.eval()
    try:
        margins = loglik_margins(model, tokenizer, fmt, behavior, device=device)
        finite = all(math.isfinite(m) for m in margins)
        kl = mean_kl(base_neutral, neutral_logprobs(model, tokenizer, list(behavior.neutral_prompts), device))
        generations = (greedy_generations(model, tokenizer, fmt, list(behavior.probes), gen_tokens, device=device)
                       if generate and finite else None)
    finally:
        model.train(was_training)
    result = {"margins": margins, "mean_margin": sum(margins) / len(margins), "kl_from_base": kl,
              "finite_logits": finite}
    if generations is not None:
        result |= text_probes(generations, behavior.markers, baseline_generations)
    return result


def text_probes(generations: list[str], markers: tuple[str, ...], baseline_generations: list[str] | None) -> dict:
    hits = marker_hits(generations, markers)
    reference = baseline_generations if baseline_generations is not None else generations
    return {
        "generations": generations,
        "marker_hits": hits,
        "marker_rate": sum(hits) / len(hits),
        "differ_from_baseline": sum(g != r for g, r in zip(generations, reference)),
    }
