"""GGUF models (as llama.cpp users keep them) as encoders.

``transformers`` reads a GGUF file (``from_pretrained(dir, gguf_file=...)``, with the ``gguf``
package) and dequantizes its weights; that takes tens of seconds for a 135M model, and every command
loads its encoder again. So the first load writes the dequantized model (float32 safetensors, its
config and its tokenizer) to the cache, in a directory named by the digest of the GGUF file's bytes,
and every later load (encoding, fine-tuning, the stock export) reads that directory as it would any
local model. A changed GGUF file is another digest, so another directory: an embedding cache entry or
a run made from one GGUF file never meets another's weights.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pyro_irm.atomic import atomic_directory
from pyro_irm.encoders.cache import default_cache_root

logger = logging.getLogger(__name__)

_DONE = "gguf_source.json"


def gguf_file(model: str) -> Path | None:
    """The GGUF file that ``model`` names: a ``.gguf`` file, or a directory with no ``config.json``
    that holds exactly one; None for anything else (llama.cpp users keep models so)."""
    path = Path(model).expanduser()
    if path.is_file():
        return path.resolve() if path.suffix == ".gguf" else None
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(path.glob("*.gguf"))
    if len(found) > 1:
        raise ValueError(
            f"encoder {model!r} holds {len(found)} GGUF files ({', '.join(p.name for p in found)}); "
            f"name one: --encoder {found[0]}"
        )
    return found[0].resolve() if found else None


def file_digest(path: Path) -> str:
    """A blake2b digest of a file's bytes (hex, 32 characters)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def dequantized_directory(path: Path, cache_root: Path | None = None) -> Path:
    """The directory holding ``path``'s model dequantized to float32 (made on first use, under
    ``<cache>/gguf/``), with its config, tokenizer and chat template."""
    import json

    source = gguf_file(str(path))
    if source is None:
        raise ValueError(f"{path} is not a GGUF file")
    digest = file_digest(source)
    target = Path(cache_root or default_cache_root()) / "gguf" / f"{source.stem}-{digest}"
    if (target / _DONE).is_file():
        return target
    logger.warning("dequantizing %s once (later loads read %s)", source.name, target)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(source.parent), gguf_file=source.name, dtype="float32"
        )
    except ImportError as error:
        raise ValueError(
            f"encoder {str(path)!r}: reading a GGUF file needs the gguf package (pip install gguf): {error}"
        ) from None
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"encoder {str(path)!r}: transformers cannot read this GGUF file ({type(error).__name__}: "
            f"{detail}); its architecture or quantization may not be supported"
        ) from None
    # The weights are plain float32 tensors now; the GGUF marker only stops save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target, marker=_DONE) as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        record = {"gguf_file": source.name, "blake2b": digest, "dequantized": "float32"}
        (temporary / _DONE).write_text(json.dumps(record, indent=2) + "\n")
    return target
