"""Chat messages as text: TRL's conversational rows read as a (prompt, response) pair.

The rule, the same everywhere (logs, pairs, the server's callers):

* a message is ``{"role": ..., "content": text}``;
* a prompt given as messages renders as its single message's content when it has one message, else
  as its turns, one ``"{role}: {content}"`` paragraph each, joined by a blank line;
* a response (``completion``, ``chosen``, ``rejected``) given as messages is the content of its last
  assistant message; earlier turns in it (TRL's implicit-prompt form, UltraFeedback's
  ``chosen``/``rejected`` lists) are the prompt when no prompt is given apart;
* a row with ``messages`` alone splits before its last message, which must be the assistant's.
"""

from __future__ import annotations

from typing import Any


class ConversationError(ValueError):
    """A message list that is not a conversation; the message says which part."""


def _checked(messages: Any, what: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ConversationError(f"{what}: expected a non-empty list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversationError(f"{what}: message {index} is a {type(message).__name__}, not an object")
        if not isinstance(message.get("role"), str):
            raise ConversationError(f"{what}: message {index} has no 'role'")
        if not isinstance(message.get("content"), str):
            raise ConversationError(f"{what}: message {index} has no text 'content'")
    return messages


def render_prompt(messages: Any, what: str = "prompt") -> str:
    """The prompt text of a message list (see the module docstring)."""
    messages = _checked(messages, what)
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def split_conversation(messages: Any, what: str = "messages") -> tuple[str, str]:
    """``(prompt, response)`` of a conversation ending in the assistant's reply."""
    messages = _checked(messages, what)
    if messages[-1]["role"] != "assistant":
        raise ConversationError(
            f"{what}: the last message is the {messages[-1]['role']}'s, not the assistant's"
        )
    if len(messages) < 2:
        raise ConversationError(f"{what}: an assistant reply with no prompt before it")
    return render_prompt(messages[:-1], what), messages[-1]["content"]


def response_text(value: Any, what: str) -> str:
    """A response given as text or as messages (its last assistant message)."""
    if isinstance(value, str):
        return value
    messages = _checked(value, what)
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    if not replies:
        raise ConversationError(f"{what}: no assistant message")
    return replies[-1]


def prompt_text(value: Any, what: str) -> str:
    """A prompt given as text or as messages."""
    return value if isinstance(value, str) else render_prompt(value, what)


def common_prompt(first: Any, second: Any, what: str) -> tuple[str, str, str]:
    """``(prompt, first response, second response)`` of two replies that repeat their prompt (TRL's
    implicit-prompt pairs, Anthropic hh-rlhf): message lists split before their last message; texts at
    the last ``"\\n\\nAssistant:"`` of their common prefix (the marker stays with the prompt)."""
    if isinstance(first, list) and isinstance(second, list):
        prompt, one = split_conversation(first, f"{what} (first)")
        other_prompt, two = split_conversation(second, f"{what} (second)")
        if prompt != other_prompt:
            raise ConversationError(f"{what}: the two conversations differ before their last reply")
        return prompt, one, two
    if isinstance(first, str) and isinstance(second, str):
        shared = _common_prefix(first, second)
        cut = shared.rfind(_HH_MARKER)
        if cut < 0:
            raise ConversationError(
                f"{what}: no prompt column, and the texts share no '\\n\\nAssistant:' turn to split at"
            )
        cut += len(_HH_MARKER)
        return first[:cut], first[cut:], second[cut:]
    raise ConversationError(f"{what}: both replies must be text, or both message lists")


_HH_MARKER = "\n\nAssistant:"


def _common_prefix(first: str, second: str) -> str:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return first[:length]
