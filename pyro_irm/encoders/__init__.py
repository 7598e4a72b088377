"""Text to embeddings: Hugging Face encoders and the on-disk embedding cache."""

from pyro_irm.encoders.cache import EmbeddingCache, default_cache_root, text_keys
from pyro_irm.encoders.config import DEFAULT_ENCODER, EncoderConfig
from pyro_irm.encoders.embed import embed_rows, load_embeddings, open_cache, save_embeddings
from pyro_irm.encoders.encoder import TextEncoder

__all__ = [
    "DEFAULT_ENCODER",
    "EmbeddingCache",
    "EncoderConfig",
    "TextEncoder",
    "default_cache_root",
    "embed_rows",
    "load_embeddings",
    "open_cache",
    "save_embeddings",
    "text_keys",
]
