"""A pyro_irm reward model as a ``transformers`` sequence classifier with one label: the reward
logit f(prompt, response). Standalone: torch and transformers only."""

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_pyro_irm_reward import PyroIrmRewardConfig


class PyroIrmRewardModel(PreTrainedModel):
    """Encoder -> pooling (-> unit length) -> MLP head -> ``logits`` ``(B, 1)``, the reward."""

    config_class = PyroIrmRewardConfig
    base_model_prefix = "encoder"

    def __init__(self, config: PyroIrmRewardConfig):
        super().__init__(config)
        encoder_config = dict(config.encoder_config)
        self.encoder = AutoModel.from_config(
            AutoConfig.for_model(encoder_config.pop("model_type"), **encoder_config)
        )
        layers = []
        width = config.embedding_dim
        for size in config.reward_hidden:
            layers += [nn.Linear(width, size), nn.GELU()]
            if config.head_dropout > 0:
                layers.append(nn.Dropout(config.head_dropout))
            width = size
        layers.append(nn.Linear(width, 1, bias=config.head_bias))
        self.head = nn.Sequential(*layers)
        self.post_init()

    def _init_weights(self, module):
        # Every weight is in the exported file; this only gives a fresh model defined values.
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, H)`` token states -> ``(B, H)`` float32 row embedding: the pooling of pyro_irm's
        ``TextEncoder``, written again because this file must run without pyro_irm."""
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.config.pooling == "last":
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            last = (positions * attention_mask).argmax(-1)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = pooled.float()
        if self.config.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        """``logits`` ``(B, 1)``: the reward of each tokenized (prompt, response) row."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.config.decoder_only:
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        layer = self.config.hidden_layer
        output = self.encoder(**inputs, output_hidden_states=layer != -1)
        hidden = output.last_hidden_state if layer == -1 else output.hidden_states[layer]
        logits = self.head(self.pool(hidden, attention_mask))
        loss = None
        if labels is not None:  # preference labels in {0, 1}: the Bernoulli likelihood of the reward
            loss = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def reward(self, tokenizer, prompts, responses, batch_size=32, normalized=False):
        """``(N,)`` rewards of (prompt, response) texts, joined as the run that fit the model joined
        them; ``normalized`` subtracts the training rows' mean reward and divides by their std."""
        self.eval()
        out = []
        for start in range(0, len(responses), batch_size):
            batch_prompts = list(prompts[start : start + batch_size])
            batch_responses = list(responses[start : start + batch_size])
            if self.config.text_mode == "chat":
                conversations = [
                    [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                    for p, r in zip(batch_prompts, batch_responses, strict=True)
                ]
                tokens = tokenizer.apply_chat_template(
                    conversations,
                    tokenize=True,
                    padding=True,
                    truncation=True,
                    max_length=self.config.text_max_length,
                    return_dict=True,
                    return_tensors="pt",
                ).to(self.device)
            else:
                first, second = (
                    (batch_prompts, batch_responses)
                    if self.config.text_mode == "pair"
                    else (batch_responses, None)
                )
                tokens = tokenizer(
                    first,
                    second,
                    padding=True,
                    truncation="longest_first",
                    max_length=self.config.text_max_length,
                    return_tensors="pt",
                ).to(self.device)
            out.append(self(**tokens).logits[:, 0].float().cpu())
        rewards = torch.cat(out) if out else torch.zeros(0)
        if normalized:
            rewards = (rewards - self.config.reward_mean) / self.config.reward_std
        return rewards
