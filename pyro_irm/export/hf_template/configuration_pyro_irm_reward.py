"""Configuration of a pyro_irm reward model exported for ``transformers`` (standalone: torch and
transformers only)."""

from transformers import PretrainedConfig


class PyroIrmRewardConfig(PretrainedConfig):
    """An encoder, its pooling, and the reward head over the pooled embedding.

    Args:
        encoder_config: the encoder's own ``config.json`` as a dict (with its ``model_type``).
        pooling: ``"mean"`` over non-padding tokens, ``"cls"`` or ``"last"`` (the last non-padding token).
        normalize: scale each pooled embedding to unit length before the head.
        text_mode: ``"pair"``: prompt and response tokenized as one sequence pair;
            ``"response"``: the response alone; ``"chat"``: the tokenizer's chat template.
        text_max_length: most tokens per sequence (longer pairs are truncated longest first).
        hidden_layer: the hidden layer read (-1: the final state).
        decoder_only: positions are counted from the attention mask (left padding reads as right).
        reward_hidden: hidden widths of the reward head (GELU between layers).
        head_bias: whether the head's last layer has a bias.
        head_dropout: dropout of the head in training (a no-op in evaluation; it only keeps the
            layer indices of the weights).
        embedding_dim: width of the pooled embedding.
        reward_mean, reward_std: the reward's mean and standard deviation over the training rows,
            for RLHF code that normalizes rewards: ``(reward - reward_mean) / reward_std``.
    """

    model_type = "pyro_irm_reward"

    def __init__(
        self,
        encoder_config=None,
        pooling="mean",
        normalize=True,
        text_mode="pair",
        text_max_length=256,
        hidden_layer=-1,
        decoder_only=False,
        reward_hidden=(),
        head_bias=True,
        head_dropout=0.0,
        embedding_dim=384,
        reward_mean=0.0,
        reward_std=1.0,
        **kwargs,
    ):
        kwargs.setdefault("num_labels", 1)
        super().__init__(**kwargs)
        self.encoder_config = dict(encoder_config or {})
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.text_mode = text_mode
        self.text_max_length = int(text_max_length)
        self.hidden_layer = int(hidden_layer)
        self.decoder_only = bool(decoder_only)
        self.reward_hidden = [int(width) for width in reward_hidden]
        self.head_bias = bool(head_bias)
        self.head_dropout = float(head_dropout)
        self.embedding_dim = int(embedding_dim)
        self.reward_mean = float(reward_mean)
        self.reward_std = float(reward_std)
