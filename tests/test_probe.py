import pytest
import torch

from trainer.behavior import load_behavior
from trainer.models.sources import resolve_model
from trainer.training.batches import PromptFormat, supervised_batch
from trainer.training.probe import continuation_logprobs, marker_hits, mean_kl, neutral_logprobs


def naive_logprobs(model, tokenizer, fmt, prompts, texts):
    """Reference: score every prompt+continuation as one right-padded sequence."""
    batch = supervised_batch(tokenizer, fmt, [(p, t) for p in prompts for t in texts], eos=False)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    picked = logprobs.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    return ((picked * mask).sum(1) / mask.sum(1)).view(len(prompts), len(texts))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-phi"])
def test_cached_prompt_scoring_equals_scoring_whole_sequences(name):
    loaded = resolve_model(name).load()
    behavior = load_behavior("epistemic-stance")
    fmt = PromptFormat("plain", behavior.prompt_template)
    prompts = list(behavior.probes[:5])  # different lengths, so left padding is exercised
    texts = list(behavior.targets + behavior.contrasts)
    with torch.inference_mode():
        fast = continuation_logprobs(loaded.model, loaded.tokenizer, fmt, prompts,
                                     [fmt.continuation_ids(loaded.tokenizer, t) for t in texts])
        slow = naive_logprobs(loaded.model, loaded.tokenizer, fmt, prompts, texts)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)


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
