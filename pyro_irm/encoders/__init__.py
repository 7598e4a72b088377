"""Text to embeddings: Hugging Face encoders and the on-disk embedding cache."""

from pyro_irm._lazy import exported_names, lazy_exports

_EXPORTS = {
    "pyro_irm.encoders.cache": (
        "EmbeddingCache",
        "default_cache_root",
        "text_keys",
    ),
    "pyro_irm.encoders.config": (
        "DEFAULT_ENCODER",
        "EncoderConfig",
    ),
    "pyro_irm.encoders.embed": (
        "Shard",
        "embed_rows",
        "load_embeddings",
        "open_cache",
        "save_embeddings",
    ),
    "pyro_irm.encoders.encoder": ("TextEncoder", "is_decoder_only", "pool"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = exported_names(_EXPORTS)
