"""A pretrained model loaded with its linear layers quantized by bitsandbytes, as QLoRA trains it.

Loading goes through transformers' own route (`from_pretrained(..., quantization_config=BitsAndBytesConfig)`),
so the layers are exactly what a QLoRA user gets: "nf4" is 4-bit NormalFloat with double quantization (the
QLoRA paper's storage), "int8" is LLM.int8(). The output head and embeddings stay in fp32 (transformers keeps
the head unquantized); the quantized layers compute in fp32. bitsandbytes runs on CUDA and on the CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trainer.errors import ConfigError, LibraryMissing

QUANTIZABLE_DEVICES = ("cuda", "cpu")
INSTALL_HINT = "pip install -e '.[quant]'  (or: pip install 'bitsandbytes>=0.49')"


def bitsandbytes_installed() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def require_bitsandbytes(quantize: str) -> None:
    """A clear refusal, before any model is loaded, where bitsandbytes is not installed."""
    if not bitsandbytes_installed():
        raise LibraryMissing(f"quantize={quantize!r} needs bitsandbytes, which is not installed in this environment; "
                             f"install it with `{INSTALL_HINT}` (`make venv` does), or train with quantize=None")


def check_quantizable(quantize: str, device: str, processes: int | None) -> None:
    """Where a quantized base trains here: bitsandbytes installed, on CUDA or the CPU (its backends with a
    backward for both formats), in one process (its layers are not wrapped for data parallelism here)."""
    require_bitsandbytes(quantize)
    problems = []
    if device not in QUANTIZABLE_DEVICES:
        problems.append(f"device={device!r}: bitsandbytes trains a quantized base on {list(QUANTIZABLE_DEVICES)} "
                        f"here; use device='cuda' or 'cpu', or quantize=None")
    if processes not in (None, 1):
        problems.append(f"processes={processes!r}: a quantized base trains in one process here; use processes=1 "
                        f"(--ft-processes 1), or quantize=None")
    if problems:
        raise ConfigError(f"quantize={quantize!r}", problems)


def quantization_config(quantize: str):
    """transformers' BitsAndBytesConfig for `quantize` ("nf4" or "int8")."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.float32)
    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ConfigError(f"quantize={quantize!r}", ["must be 'nf4' or 'int8'"])


def load_quantized(folder: Path, quantize: str, device):
    """The model in `folder` (checked as safetensors by the caller, ModelSource.load_quantized) with its linear
    layers quantized on `device` (eval mode), ready for an adapter."""
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    require_bitsandbytes(quantize)
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=quantization_config(quantize), dtype=torch.float32, use_safetensors=True,
        local_files_only=True, device_map={"": torch.device(device)})
    # peft's QLoRA preparation: every parameter frozen, anything not quantized kept in fp32.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    keep_one_compute_path(model)
    return model.eval()


def keep_one_compute_path(model) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight the first time it runs in eval mode without
    gradients (a probe), and from then on multiplies through a bf16 kernel that has no backward: training after
    a probe would compute in bf16 and pass no gradient through the frozen layers to the adapters below them.
    Turned off, probes and training share the fp32 dequantize-and-multiply path, which has a backward."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def is_quantized(module) -> bool:
    """A bitsandbytes linear layer (its weight is packed: it has no meaning as a float tensor)."""
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def float_weight(module):
    """A linear layer's weight as floats: dequantized for a bitsandbytes layer (through peft), as is otherwise."""
    if is_quantized(module):
        from peft.utils.integrations import dequantize_module_weight

        return dequantize_module_weight(module)
    return module.weight
