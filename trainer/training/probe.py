"""Behavior probes, run at every evaluated epoch: what the model would say, and how likely it finds each stance.

- log-likelihood margin per held-out probe: mean per-token log-prob of the target continuations
  minus that of the contrast continuations (the statistic verdicts are decided on);
- greedy generations, and how many differ from the baseline's (the notebook's "N/M different");
- marker rate: the share of generations containing a stance marker;
- mean KL(base || tuned) of next-token distributions on neutral prompts (how far the model moved overall).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from trainer.behavior import Behavior
from trainer.errors import ConfigError
from trainer.training.batches import PromptFormat, pad_id, right_pad

SCORE_BATCH = 48  # prompts per forward pass: one look's 44 probes in one batch, so decoding runs 44 rows at once


@dataclass
class PromptBatch:
    """Prompts of similar length after their one shared forward pass: the cache every later pass extends."""

    rows: list[int]  # which of the behavior's probes, in this batch's order
    mask: torch.Tensor  # [rows, width] 1 on real (left-padded) prompt tokens
    cache: DynamicCache  # the prompt tokens' keys and values, extended by later passes
    last_logits: torch.Tensor  # [rows, vocab] float32 logits after the last prompt token

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(dim=1, keepdim=True)


@torch.no_grad()  # not inference_mode: a sharded model gathers its weights in place while probed
def loglik_margins(model, tokenizer, fmt: PromptFormat, behavior: Behavior, device: torch.device | None = None,
                   batches: list[PromptBatch] | None = None) -> list[float]:
    """Per probe: mean per-token log-prob of the target continuations minus that of the contrasts."""
    continuations = [fmt.continuation_ids(tokenizer, c) for c in behavior.targets + behavior.contrasts]
    if batches is None:
        batches = prompt_batches(model, tokenizer, fmt, list(behavior.probes), device)
    scores = in_probe_order(batches, [continuation_logprobs(model, b, continuations) for b in batches])
    n_targets = len(behavior.targets)
    margins = scores[:, :n_targets].mean(dim=1) - scores[:, n_targets:].mean(dim=1)
    return [float(m) for m in margins]


def prompt_batches(model, tokenizer, fmt: PromptFormat, prompts: list[str], device: torch.device | None = None,
                   batch_size: int = SCORE_BATCH) -> list[PromptBatch]:
    """Encode every prompt once, in batches of neighbouring lengths (little left padding), keeping each batch's
    cache: continuation scoring and greedy generation both extend it, so the prompts are computed once per look.

    (A static, preallocated cache saves the growing cache's copies but attends over its whole length at every
    step: no faster here, and further from the unpadded computation.)"""
    encoded = [fmt.prompt_ids(tokenizer, p) for p in prompts]
    by_length = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    return [_prompt_pass(model, by_length[i: i + batch_size], encoded, pad_id(tokenizer), device or model.device)
            for i in range(0, len(by_length), batch_size)]


def _prompt_pass(model, rows: list[int], encoded: list[list[int]], pad: int, device: torch.device) -> PromptBatch:
    ids, mask = _left_pad([encoded[i] for i in rows], pad, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), cache=DynamicCache(),
                use_cache=True, logits_to_keep=1)
    return PromptBatch(rows, mask, out.cache, out.logits[:, -1].float())


def continuation_logprobs(model, batch: PromptBatch, continuations: list[list[int]]) -> torch.Tensor:
    """[prompts, continuations] mean per-token log-prob of each continuation after each prompt of `batch`.

    Every continuation is scored in one pass that extends the prompts' cache: the continuations are fed side by
    side, each (without its last token: nothing follows it) seeing the prompt and its own earlier tokens only
    (a block-diagonal 4D mask, positions counted from each prompt's end). So no cache is copied, the matmuls are
    as wide as all the continuations together, and only scored positions pay for the LM head (with Gemma's
    262k-token vocabulary the head dominates). The pass's keys are cropped off again afterwards.
    """
    first = batch.last_logits - batch.last_logits.logsumexp(dim=-1, keepdim=True)
    totals = torch.stack([first[:, ids[0]] for ids in continuations], dim=1)
    fed = [ids[:-1] for ids in continuations]
    width = sum(len(f) for f in fed)
    if width:
        later = _scored(_side_by_side(model, batch, fed), [t for ids in continuations for t in ids[1:]])
        sums = torch.stack([part.sum(dim=1) for part in later.split([len(f) for f in fed], dim=1)], dim=1)
        totals = totals + sums
        batch.cache.crop(-width)
    return totals / torch.tensor([len(ids) for ids in continuations], device=totals.device)


def _side_by_side(model, batch: PromptBatch, fed: list[list[int]]) -> torch.Tensor:
    """Logits of every fed continuation token after its prompt, all continuations in one forward pass."""
    rows, device = len(batch.rows), batch.mask.device
    tokens = torch.tensor([t for f in fed for t in f], device=device).expand(rows, -1)
    offsets = torch.cat([torch.arange(len(f), device=device) for f in fed])
    owner = torch.cat([torch.full((len(f),), k, device=device) for k, f in enumerate(fed)])
    own_earlier = (owner[:, None] == owner[None, :]) & (offsets[None, :] <= offsets[:, None])  # [width, width]
    seen = torch.cat([batch.mask.bool()[:, None, :].expand(-1, len(owner), -1),
                      own_earlier.expand(rows, -1, -1)], dim=2)  # [rows, width, prompt + width]
    _check_window(model, batch.mask.shape[1] + max(len(f) for f in fed))
    out = model(input_ids=tokens, attention_mask=_as_attention_mask(model, seen[:, None]),
                position_ids=batch.lengths + offsets, cache=batch.cache, use_cache=True)
    return out.logits


def _as_attention_mask(model, seen: torch.Tensor) -> torch.Tensor:
    """A custom 4D mask is used as given: SDPA reads booleans (True: attend), eager attention adds it to scores;
    other kernels (flash, flex) cannot take an arbitrary mask."""
    attention = model.config._attn_implementation
    if attention not in ("sdpa", "eager"):
        raise ConfigError(f"attn_implementation={attention!r}", [
            "probes score every continuation in one pass with a custom attention mask, which only 'sdpa' and "
            "'eager' take: load the model with attn_implementation='sdpa'"])
    if attention == "sdpa":
        return seen
    dtype = next(model.parameters()).dtype
    return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill_(~seen, torch.finfo(dtype).min)


def _scored(logits: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """[rows, positions] log-prob of each position's target token: its logit minus the log-sum-exp.

    The log-sum-exp is taken in place (the logits are not needed afterwards): with Gemma's vocabulary the logits of
    one look's continuations are about 1 GB, and a log-softmax or `logsumexp` writes temporaries of that size,
    whose first touch costs more than the arithmetic."""
    logits = logits.float()
    index = torch.tensor(targets, device=logits.device).expand(len(logits), -1)
    picked = logits.gather(2, index[..., None]).squeeze(-1)
    top = logits.amax(dim=-1, keepdim=True)
    total = logits.sub_(top).exp_().sum(dim=-1)
    return picked - (top.squeeze(-1) + total.log())


def _check_window(model, length: int) -> None:
    """A sliding-window layer (Gemma-3) is given the same custom mask as a global one: exact while the prompt and the
    longest continuation fit in the window."""
    window = getattr(model.config, "sliding_window", None)
    if window and length > window:
        raise ConfigError(f"a probe of {length} tokens (prompt and continuations)", [
            f"it is longer than {model.config.model_type}'s sliding window of {window} tokens, inside which "
            "continuations are scored in one pass; shorten the behavior's probes or continuations"])


def in_probe_order(batches: list[PromptBatch], per_batch: list[torch.Tensor]) -> torch.Tensor:
    """Rows of per-batch results put back in the order the prompts were given."""
    rows = torch.tensor([r for b in batches for r in b.rows])
    stacked = torch.cat(per_batch)
    return stacked[torch.argsort(rows.to(stacked.device))]


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
                       device: torch.device | None = None, batches: list[PromptBatch] | None = None) -> list[str]:
    """Greedy answers (what `generate(do_sample=False)` gives), continuing each batch's prompt cache and stopping
    as soon as every answer of the batch has ended."""
    if not plain_greedy(model):
        return _generated(model, tokenizer, fmt, prompts, max_new_tokens, device)
    if batches is None:
        batches = prompt_batches(model, tokenizer, fmt, prompts, device)
    stop = torch.as_tensor(model.generation_config.eos_token_id).reshape(-1)
    texts = {}
    for batch in batches:
        tokens = _greedy_tokens(model, batch, max_new_tokens, stop.to(batch.mask.device), pad_id(tokenizer))
        for row, text in zip(batch.rows, tokenizer.batch_decode(tokens, skip_special_tokens=True)):
            texts[row] = text.strip()
    return [texts[i] for i in range(len(prompts))]


def _greedy_tokens(model, batch: PromptBatch, max_new_tokens: int, stop: torch.Tensor, pad: int) -> torch.Tensor:
    """[rows, steps] greedy tokens; a row that has ended is padded, as `generate` does."""
    logits, mask, position = batch.last_logits, batch.mask, batch.lengths
    ended = torch.zeros(len(mask), dtype=torch.bool, device=mask.device)
    chosen = []
    for step in range(max_new_tokens):
        token = logits.max(dim=-1).indices.masked_fill(ended, pad)  # the first maximum, as argmax; 3x faster here
        chosen.append(token)
        ended |= torch.isin(token, stop)
        if step == max_new_tokens - 1 or bool(ended.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, cache=batch.cache,
                    use_cache=True)
        logits, position = out.logits[:, -1].float(), position + 1
    return torch.stack(chosen, dim=1)


# Generation settings under which `generate(do_sample=False)` is more than "take the largest logit, stop at EOS",
# with the values that leave it at that.
NEUTRAL_GENERATION = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None, []), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "suppress_tokens": (None, []), "begin_suppress_tokens": (None, []),
    "forced_bos_token_id": (None,), "forced_eos_token_id": (None,), "sequence_bias": (None, {}),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0), "watermarking_config": (None,),
    "num_beams": (None, 1), "penalty_alpha": (None,), "dola_layers": (None,),
}


def plain_greedy(model) -> bool:
    """Whether the model's generation config makes greedy decoding plain (and names its EOS), so that the short
    loop here gives what `generate` gives; otherwise `generate` itself answers (a model shipping, say, a
    repetition penalty)."""
    config = getattr(model, "generation_config", None)
    if config is None or config.eos_token_id is None:
        return False
    return all(getattr(config, name, None) in neutral for name, neutral in NEUTRAL_GENERATION.items())


def _generated(model, tokenizer, fmt: PromptFormat, prompts: list[str], max_new_tokens: int,
               device: torch.device | None, batch_size: int = 64) -> list[str]:
    """Greedy answers from `generate` itself, which applies the generation config's logits processors."""
    texts = [fmt.render(tokenizer, p) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"  # batched generation needs left padding
    try:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i: i + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=fmt.style != "chat").to(device or model.device)
            generated = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=pad_id(tokenizer))
            out += [t.strip() for t in tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:],
                                                              skip_special_tokens=True)]
        return out
    finally:
        tokenizer.padding_side = side


@torch.no_grad()  # not inference_mode: a sharded model gathers its weights in place while probed
def neutral_logprobs(model, tokenizer, prompts: list[str], device: torch.device | None = None) -> list[torch.Tensor]:
    """Next-token log-distributions at every position of each neutral prompt, on the CPU (the base model's are
    kept for the whole run). One right-padded forward for all prompts: a causal model's real positions do not
    see the padding after them."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    padded = right_pad([(row, row) for row in encoded], pad_id(tokenizer))
    device = device or model.device
    logits = model(input_ids=padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device)).logits
    return [torch.log_softmax(logits[i, : len(row)].float(), dim=-1).cpu() for i, row in enumerate(encoded)]


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
        batches = prompt_batches(model, tokenizer, fmt, list(behavior.probes), device)  # shared by both probes
        margins = loglik_margins(model, tokenizer, fmt, behavior, batches=batches)
        finite = all(math.isfinite(m) for m in margins)
        kl = mean_kl(base_neutral, neutral_logprobs(model, tokenizer, list(behavior.neutral_prompts), device))
        generations = (greedy_generations(model, tokenizer, fmt, list(behavior.probes), gen_tokens,
                                          batches=batches) if generate and finite else None)
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
