"""Text to token batches: how a prompt is shown to a model, and supervised rows with the loss on the response only."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.behavior import Behavior, Example

IGNORE_INDEX = -100


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt is shown to a model: its chat template (instruct models) or the plain template."""

    style: str  # "chat" or "plain"
    template: str

    def render(self, tokenizer, prompt: str) -> str:
        if self.style == "chat":
            messages = [{"role": "user", "content": prompt}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.template.format(prompt=prompt)

    def continuation(self, text: str) -> str:
        """Chat templates end the prompt with a newline; the plain template needs a separating space."""
        return text if self.style == "chat" else " " + text

    def prompt_ids(self, tokenizer, prompt: str) -> list[int]:
        # Chat templates already carry their special tokens; plain text gets the tokenizer's BOS.
        return tokenizer(self.render(tokenizer, prompt), add_special_tokens=self.style != "chat")["input_ids"]

    def continuation_ids(self, tokenizer, text: str) -> list[int]:
        return tokenizer(self.continuation(text), add_special_tokens=False)["input_ids"]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def build_training_batch(tokenizer, fmt: PromptFormat, examples: list[Example]) -> dict[str, torch.Tensor]:
    """Loss only on response tokens (+ EOS), the usual SFT masking."""
    return supervised_batch(tokenizer, fmt, [(e.prompt, e.response) for e in examples], eos=True)


def supervised_batch(tokenizer, fmt: PromptFormat, pairs: list[tuple[str, str]], eos: bool) -> dict[str, torch.Tensor]:
    """Right-padded (prompt, continuation) rows whose labels mark only the continuation (and EOS if asked)."""
    rows = []
    for prompt, continuation in pairs:
        p = fmt.prompt_ids(tokenizer, prompt)
        c = fmt.continuation_ids(tokenizer, continuation) + ([tokenizer.eos_token_id] if eos else [])
        rows.append((p + c, [IGNORE_INDEX] * len(p) + c))
    return right_pad(rows, pad_id(tokenizer))


def right_pad(rows: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def rank_share(batch: dict[str, torch.Tensor], rank: int, world: int) -> tuple[dict[str, torch.Tensor], float]:
    """This process's rows of a global batch (every `world`-th, from `rank`) and the weight that makes the
    processes' averaged gradient equal the one-process gradient of the whole batch.

    The model's loss is a mean over the scored tokens of the rows it sees; the whole batch's mean is
    sum_r(mean_r * tokens_r) / tokens, and data parallelism averages over `world` processes, so each scales
    its loss by world * tokens_r / tokens. Rows keep the global batch's padding, so logits match too. A
    process left without rows (a short last batch) runs row 0 with weight 0 and still joins the reduction.
    """
    if world == 1:
        return batch, 1.0
    rows = list(range(rank, batch["input_ids"].shape[0], world))
    if not rows:
        return {name: tensor[:1] for name, tensor in batch.items()}, 0.0
    part = {name: tensor[rows] for name, tensor in batch.items()}
    return part, world * scored_tokens(part["labels"]) / scored_tokens(batch["labels"])


def scored_tokens(labels: torch.Tensor) -> int:
    """Tokens a causal LM's loss averages over: labels are shifted by one, so the first column never counts."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def training_examples(behavior: Behavior, split: str, seed: int) -> tuple[Example, ...]:
    """The rows a run trains on: as written for seed 0, else a seeded bootstrap resample (see Experiment)."""
    rows = behavior.examples(split)
    if seed == 0:
        return rows
    picks = torch.randint(len(rows), (len(rows),), generator=torch.Generator().manual_seed(seed))
    return tuple(rows[i] for i in picks.tolist())


