import logging
import warnings

import numpy
import pytest
import torch

from trainer.behavior import load_behavior
from trainer.models.sources import resolve_model
from trainer.training.batches import PromptFormat, pad_id, supervised_batch
from trainer.training.probe import (
    continuation_logprobs,
    greedy_generations,
    in_probe_order,
    marker_hits,
    mean_kl,
    neutral_logprobs,
    plain_greedy,
    probe_model,
    prompt_batches,
)


def naive_logprobs(model, tokenizer, fmt, prompts, texts):
    """Reference: score every prompt+continuation as one right-padded sequence."""
    batch = supervised_batch(tokenizer, fmt, [(p, t) for p in prompts for t in texts], eos=False)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    picked = logprobs.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return ((picked * mask).sum(1) / mask.sum(1)).view(len(prompts), len(texts))


@pytest.mark.parametrize("name, attention", [("tiny-llama", "sdpa"), ("tiny-qwen2", "sdpa"), ("tiny-phi", "sdpa"),
                                             ("tiny-llama", "eager")])
def test_cached_prompt_scoring_equals_scoring_whole_sequences(name, attention):
    """SDPA takes the one-pass mask as booleans, eager attention as an additive float mask: both must score alike."""
    loaded = resolve_model(name).load()
    loaded.model.set_attn_implementation(attention)
    behavior = load_behavior("epistemic-stance")
    fmt = PromptFormat("plain", behavior.prompt_template)
    prompts = list(behavior.probes[:5])  # different lengths, so left padding is exercised
    texts = list(behavior.targets + behavior.contrasts)
    continuations = [fmt.continuation_ids(loaded.tokenizer, t) for t in texts]
    with torch.inference_mode():
        batches = prompt_batches(loaded.model, loaded.tokenizer, fmt, prompts, batch_size=3)
        fast = in_probe_order(batches, [continuation_logprobs(loaded.model, b, continuations) for b in batches])
        slow = naive_logprobs(loaded.model, loaded.tokenizer, fmt, prompts, texts)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-phi"])
def test_greedy_answers_equal_generate_and_scoring_leaves_the_prompt_cache_as_it_was(name):
    """The shared prompt cache serves the scoring pass and then generation: what generation answers must be what
    `generate(do_sample=False)` answers from the bare prompts, in the prompts' own order."""
    loaded = resolve_model(name).load()
    behavior = load_behavior("epistemic-stance")
    fmt = PromptFormat("plain", behavior.prompt_template)
    prompts = list(behavior.probes[:7])
    tokenizer = loaded.tokenizer
    continuations = [fmt.continuation_ids(tokenizer, t) for t in behavior.targets + behavior.contrasts]
    with torch.no_grad():
        batches = prompt_batches(loaded.model, tokenizer, fmt, prompts, batch_size=4)
        for batch in batches:
            continuation_logprobs(loaded.model, batch, continuations)
        ours = greedy_generations(loaded.model, tokenizer, fmt, prompts, 12, batches=batches)
        tokenizer.padding_side = "left"
        enc = tokenizer([fmt.render(tokenizer, p) for p in prompts], return_tensors="pt", padding=True)
        out = loaded.model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=pad_id(tokenizer))
    theirs = [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    assert ours == theirs


def _greedy_pair(loaded, fmt, prompts, steps):
    """(ours, generate's) greedy answers for `prompts`."""
    tokenizer = loaded.tokenizer
    with torch.no_grad():
        ours = greedy_generations(loaded.model, tokenizer, fmt, prompts, steps)
        tokenizer.padding_side = "left"
        enc = tokenizer([fmt.render(tokenizer, p) for p in prompts], return_tensors="pt", padding=True)
        out = loaded.model.generate(**enc, max_new_tokens=steps, do_sample=False, pad_token_id=pad_id(tokenizer))
    return ours, [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                                           skip_special_tokens=True)]


def test_answers_that_end_early_are_cut_and_padded_as_generate_does():
    """EOS ids chosen from what the model is about to say, so that rows end at different steps (one id given as a
    plain int, a list of two, a numpy integer): every answer still equals generate's."""
    loaded = resolve_model("tiny-llama").load()
    fmt = PromptFormat("plain", load_behavior("epistemic-stance").prompt_template)
    prompts = list(load_behavior("epistemic-stance").probes[:6])
    batches = prompt_batches(loaded.model, loaded.tokenizer, fmt, prompts)
    with torch.no_grad():
        free = torch.cat([_greedy_tokens_of(loaded.model, b) for b in batches])
    for eos in (int(free[0, 2]), [int(free[1, 1]), int(free[2, 4])], numpy.int64(free[3, 3])):
        assert torch.isin(free[:, :-1], torch.as_tensor(eos)).any(), "some answer must end before the last step"
        loaded.model.generation_config.eos_token_id = eos
        ours, theirs = _greedy_pair(loaded, fmt, prompts, 8)
        assert ours == theirs, eos


def _greedy_tokens_of(model, batch):
    from trainer.training.probe import _greedy_tokens

    return _greedy_tokens(model, batch, 8, torch.tensor([-1]), 0)


def test_a_generation_config_with_logits_processors_is_answered_by_generate_itself():
    """A repetition penalty (Qwen2.5-Instruct ships one) changes greedy answers: such models go through generate."""
    loaded = resolve_model("tiny-llama").load()
    fmt = PromptFormat("plain", load_behavior("epistemic-stance").prompt_template)
    prompts = list(load_behavior("epistemic-stance").probes[:4])
    assert plain_greedy(loaded.model)
    loaded.model.generation_config.repetition_penalty = 3.0
    assert not plain_greedy(loaded.model)
    ours, theirs = _greedy_pair(loaded, fmt, prompts, 10)
    assert ours == theirs


def test_probing_warns_of_nothing(caplog):
    """Our calls use transformers' current names (`cache`, not the deprecated `past_key_values`)."""
    loaded = resolve_model("tiny-llama").load()
    behavior = load_behavior("epistemic-stance")
    fmt = PromptFormat("plain", behavior.prompt_template)
    base = neutral_logprobs(loaded.model, loaded.tokenizer, list(behavior.neutral_prompts))
    logger = logging.getLogger("transformers")
    propagates, logger.propagate = logger.propagate, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with caplog.at_level(logging.WARNING):
                probe_model(loaded.model, loaded.tokenizer, fmt, behavior, 8, base, None)
    finally:
        logger.propagate = propagates
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_kl_is_zero_for_the_same_model_and_positive_after_a_change():
    loaded = resolve_model("tiny-llama").load()
    prompts = ["The quick brown fox.", "Water is wet."]
    base = neutral_logprobs(loaded.model, loaded.tokenizer, prompts)
    assert mean_kl(base, neutral_logprobs(loaded.model, loaded.tokenizer, prompts)) == pytest.approx(0, abs=1e-7)
    with torch.no_grad():
        loaded.model.lm_head.weight.mul_(1.5)
    assert mean_kl(base, neutral_logprobs(loaded.model, loaded.tokenizer, prompts)) > 1e-4


def test_marker_hits_are_case_insensitive_substrings():
    assert marker_hits(["I'm NOT SURE at all", "Paris."], ("not sure",)) == [True, False]
