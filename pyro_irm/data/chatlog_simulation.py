"""A chat-product log simulated on responses of known quality (docs/method.md, "The generative model").

Each shown response gets a user, a display position and what users of chat products log: three
binary actions (``copied`` and ``thumbs_up``, positive; ``regenerated``, negative), a continuous
``dwell_seconds`` and, on a chosen share of rows, an explicit ``label``. Who acts at all is driven
by things that are not quality (response length, code blocks, position, how active the user is),
so a classifier of "acted" learns them; each channel has a propensity of its own besides (code
blocks draw copies, not thumbs). Per row, with ``x`` the standardized log length, ``k`` the
code-block flag, ``p`` the standardized position and ``u`` the user's activity::

    o  ~ Bernoulli(sigmoid(b + length_effect x + code_effect k - position_effect p + u
                          + preference_bias r))                 # b: mean engagement_rate
    copied      | o=1 ~ Bernoulli(sigmoid(copy_logit + copy_effect r + copy_code_effect k))
    thumbs_up   | o=1 ~ Bernoulli(sigmoid(thumbs_logit + thumbs_effect r))
    regenerated | o=1 ~ Bernoulli(sigmoid(regenerate_logit - regenerate_effect r))
    log1p(dwell)      ~ Normal(dwell_silent + dwell_length x + dwell_effect r
                               + o (dwell_engaged_shift + dwell_engaged_effect r), dwell_sd)

A silent row (o = 0) fires no binary action. The truth (r, o, P(o = 1)) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pyro_irm.channels import ChannelSpec
from pyro_irm.data.config import ChatLogConfig, SimulationConfig
from pyro_irm.data.feedback import FeedbackData, make_truth
from pyro_irm.data.world import offset_for_rate, standardize, synthetic_truth

CHATLOG_CHANNELS: tuple[ChannelSpec, ...] = (
    ChannelSpec("copied", "positive"),
    ChannelSpec("thumbs_up", "positive"),
    ChannelSpec("regenerated", "negative"),
    ChannelSpec("dwell_seconds", "positive", "continuous"),
)
# Context columns a chat log has or can compute from the response: they drive who acts.
CHATLOG_CONTEXT: tuple[str, ...] = ("position", "response_length", "has_code")


@dataclass(frozen=True)
class ChatLogActions:
    """What :func:`simulate_chatlog_actions` draws; every field is ``(N,)``."""

    copied: torch.Tensor
    thumbs_up: torch.Tensor
    regenerated: torch.Tensor
    dwell_seconds: torch.Tensor
    users: torch.Tensor
    positions: torch.Tensor
    has_label: torch.Tensor
    engagement: torch.Tensor
    propensity_probability: torch.Tensor

    @property
    def actions(self) -> torch.Tensor:
        """``(N, 4)`` in :data:`CHATLOG_CHANNELS` order."""
        return torch.stack([self.copied, self.thumbs_up, self.regenerated, self.dwell_seconds], dim=1)


def simulate_chatlog_actions(
    preference: torch.Tensor,
    log_length: torch.Tensor,
    has_code: torch.Tensor,
    config: ChatLogConfig | None = None,
) -> ChatLogActions:
    """Draw users, positions, engagement and the four channels for rows of known preference.

    Args:
        preference: ``(N,)`` true preference r in {0, 1}.
        log_length: ``(N,)`` log length of each response (standardized here).
        has_code: ``(N,)`` 1 where the response holds a code block.
    """
    config = config or ChatLogConfig()
    generator = torch.Generator().manual_seed(config.seed)
    num_rows = preference.shape[0]
    r = preference.float()
    code = has_code.float()
    length = standardize(log_length.float()) if num_rows > 1 else log_length.float() * 0
    # Users act with their own activity; a few users read many responses (Zipf-like weights).
    activity = config.user_activity * torch.randn(config.num_users, generator=generator)
    weights = 1.0 / torch.arange(1, config.num_users + 1, dtype=torch.float64) ** 0.7
    users = torch.multinomial(weights, num_rows, replacement=True, generator=generator)
    positions = torch.randint(config.num_positions, (num_rows,), generator=generator).float() + 1
    position = standardize(positions) if config.num_positions > 1 else positions * 0
    logits = (
        config.length_effect * length
        + config.code_effect * code
        - config.position_effect * position
        + activity[users]
        + config.preference_bias * r
    )
    propensity_probability = torch.sigmoid(logits + offset_for_rate(logits, config.engagement_rate))
    engaged = torch.bernoulli(propensity_probability, generator=generator)

    def fires(logit: torch.Tensor) -> torch.Tensor:
        return engaged * torch.bernoulli(torch.sigmoid(logit), generator=generator)

    copied = fires(config.copy_logit + config.copy_effect * r + config.copy_code_effect * code)
    thumbs_up = fires(config.thumbs_logit + config.thumbs_effect * r)
    regenerated = fires(config.regenerate_logit - config.regenerate_effect * r)
    log_dwell = (
        config.dwell_silent
        + config.dwell_length * length
        + config.dwell_effect * r
        + engaged * (config.dwell_engaged_shift + config.dwell_engaged_effect * r)
        + config.dwell_sd * torch.randn(num_rows, generator=generator)
    )
    dwell_seconds = torch.expm1(log_dwell).clamp_min(0.0)
    has_label = torch.rand(num_rows, generator=generator) < config.label_fraction
    return ChatLogActions(
        copied=copied,
        thumbs_up=thumbs_up,
        regenerated=regenerated,
        dwell_seconds=dwell_seconds,
        users=users,
        positions=positions,
        has_label=has_label,
        engagement=engaged,
        propensity_probability=propensity_probability,
    )


def has_code_block(text: str) -> bool:
    """Whether a response holds a fenced or indented code block."""
    return "```" in text or any(line.startswith("    ") and line.strip() for line in text.splitlines())


def response_features(responses: list[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(log_length (N,), has_code (N,), lengths in characters (N,))`` of response texts."""
    lengths = np.asarray([len(r) for r in responses], dtype=np.int64)
    code = torch.tensor([float(has_code_block(r)) for r in responses])
    return torch.log1p(torch.from_numpy(lengths).double()).float(), code, lengths


def chatlog_records(
    prompts: list[str],
    responses: list[str],
    prompt_ids: list[str],
    preference: np.ndarray,
    scores: np.ndarray,
    config: ChatLogConfig | None = None,
) -> list[dict]:
    """Chat-log records for responses of known preference: the channels, ``user_id``,
    ``position``, ``response_length``, ``has_code``, ``label`` (on ``label_fraction`` of rows,
    else empty) and the truth columns."""
    config = config or ChatLogConfig()
    log_length, code, lengths = response_features(responses)
    drawn = simulate_chatlog_actions(torch.as_tensor(preference).float(), log_length, code, config)
    width = len(str(config.num_users - 1))
    records = []
    for i in range(len(responses)):
        records.append(
            {
                "prompt": prompts[i],
                "response": responses[i],
                "prompt_id": prompt_ids[i],
                "user_id": f"u{int(drawn.users[i]):0{width}d}",
                "position": int(drawn.positions[i]),
                "response_length": int(lengths[i]),
                "has_code": int(code[i]),
                "copied": int(drawn.copied[i]),
                "thumbs_up": int(drawn.thumbs_up[i]),
                "regenerated": int(drawn.regenerated[i]),
                "dwell_seconds": round(float(drawn.dwell_seconds[i]), 2),
                "label": int(preference[i]) if bool(drawn.has_label[i]) else None,
                "true_preference": int(preference[i]),
                "true_engagement": int(drawn.engagement[i]),
                "true_propensity_probability": round(float(drawn.propensity_probability[i]), 6),
                "score": float(scores[i]),
            }
        )
    return records


def synthetic_response_features(
    embeddings: torch.Tensor, world_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_length (N,), has_code (N,))`` for rows without text: two fixed directions of the
    embedding stand for the response's log length and (above a threshold) a code block."""
    world = torch.Generator().manual_seed(world_seed + 7919)
    directions = torch.randn(embeddings.shape[1], 2, generator=world)
    projections = embeddings @ (directions / directions.norm(dim=0, keepdim=True))
    return 6.0 + 0.8 * projections[:, 0], (projections[:, 1] > 0.8).float()


def chatlog_feedback(
    embeddings: torch.Tensor,
    preference: torch.Tensor,
    score: torch.Tensor,
    log_length: torch.Tensor,
    has_code: torch.Tensor,
    config: ChatLogConfig,
    preference_probability: torch.Tensor | None = None,
    prompt_ids: torch.Tensor | None = None,
) -> FeedbackData:
    """A chat log drawn by ``config`` on rows of known preference ``(N,)``, as the model sees it:
    the four channels, users, the standardized context (position, log length, code flag), labels
    on ``label_fraction`` of the rows (NaN elsewhere) and the truth."""
    drawn = simulate_chatlog_actions(preference, log_length, has_code, config)
    context = torch.stack([drawn.positions, log_length.float(), has_code.float()], dim=1)
    context = (context - context.mean(0)) / context.std(0).clamp_min(1e-6)
    truth = make_truth(
        preference,
        drawn.engagement,
        preference if preference_probability is None else preference_probability,
        drawn.propensity_probability,
        score,
    )
    return FeedbackData(
        embeddings=embeddings,
        actions=drawn.actions,
        channels=CHATLOG_CHANNELS,
        context=context,
        context_names=CHATLOG_CONTEXT,
        truth=truth,
        labels=torch.where(drawn.has_label, preference, torch.full_like(preference, float("nan"))),
        users=drawn.users,
        prompt_ids=prompt_ids,
    )


def simulate_chatlog(
    num_rows: int = 20_000,
    embedding_dim: int = 32,
    config: ChatLogConfig | None = None,
    world_seed: int = 0,
) -> FeedbackData:
    """A synthetic chat log (no text): :func:`~pyro_irm.data.simulation`'s embeddings and true
    preference, with the chat-log channels, users and labels drawn by ``config``
    (:func:`chatlog_feedback`; length and code from :func:`synthetic_response_features`).
    ``seed`` of ``config`` draws the rows, ``world_seed`` the truth they share.
    """
    config = config or ChatLogConfig()
    embeddings, score, preference_probability, preference, _, _ = synthetic_truth(
        SimulationConfig(
            num_rows=num_rows, embedding_dim=embedding_dim, seed=config.seed, world_seed=world_seed
        )
    )
    log_length, has_code = synthetic_response_features(embeddings, world_seed)
    return chatlog_feedback(
        embeddings,
        preference,
        score,
        log_length,
        has_code,
        config,
        preference_probability,
    )
