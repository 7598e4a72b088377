"""A reward server for RLHF trainers: OpenRLHF's ``POST /get_reward``, ``POST /score`` for rows, and
``GET /health``, on FastAPI and uvicorn. Requests from concurrent clients are gathered into one
batch (up to ``max_batch_rows`` rows or ``max_wait_ms``) and scored by one worker thread.

How a request's texts become (prompt, response) rows, in order:

1. ``{"prompts": [...], "responses": [...]}``: as given.
2. ``{"query": [...], "prompts": [...]}`` (what OpenRLHF sends): each query is its prompt followed by
   the response, so the response is the query with the prompt removed from its start.
3. ``{"query": [...]}`` alone: each query is split at the last occurrence of the server's
   ``query_separator`` (for example the chat template's assistant marker); the separator belongs
   to neither part. Without a separator such a request is refused.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from real annotations.

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

logger = logging.getLogger(__name__)

MAX_REQUEST_ROWS = 8192


class TextScorer:
    """Rewards of (prompt, response) texts under a fitted run: its encoder, then its reward network.

    Args:
        run: a :class:`pyro_irm.runs.Run` fit from text (it names its encoder).
        device: where the encoder and the reward network run.
    """

    def __init__(self, run, device: str = "cpu"):
        from pyro_irm.encoders.encoder import TextEncoder

        if run.encoder is None:
            raise ValueError(
                f"{run.directory} was fit on precomputed embeddings, so it names no encoder to read "
                "texts with; fit it from text to serve it"
            )
        self.run = run
        self.encoder = TextEncoder(replace(run.encoder, device=device))
        stats = run.info.get("reward_stats") or {"mean": 0.0, "std": 1.0}
        self.mean, self.std = float(stats["mean"]), float(stats["std"]) or 1.0

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """``(N,)`` float32 rewards (logits of P(preferred))."""
        from pyro_irm.encoders.embed import embed_rows

        if not responses:
            return np.zeros(0, dtype=np.float32)
        embeddings = embed_rows(list(prompts), list(responses), self.encoder)
        return self.run.reward_model.score(embeddings).numpy()


@dataclass
class _Pending:
    prompts: list[str]
    responses: list[str]
    future: asyncio.Future


class RequestBatcher:
    """Gathers the rows of concurrent requests into batches for one scoring function.

    Args:
        score: ``(prompts, responses) -> (N,) rewards``; called in a worker thread, one batch at a time.
        max_batch_rows: most rows per batch (a larger single request is scored alone).
        max_wait_ms: how long the first request of a batch waits for others to join it.
    """

    def __init__(self, score: Callable, max_batch_rows: int = 256, max_wait_ms: float = 5.0):
        self.score = score
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self.batches = 0
        self.rows = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def submit(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """The rewards of these rows, scored in a batch with whatever else is waiting."""
        if self._queue is None:
            raise RuntimeError("RequestBatcher.start() was not awaited")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prompts, responses, future))
        return await future

    async def _next_batch(self) -> list[_Pending]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        rows = len(batch[0].responses)
        deadline = loop.time() + self.max_wait
        while rows < self.max_batch_rows:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                pending = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            batch.append(pending)
            rows += len(pending.responses)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            prompts = [p for pending in batch for p in pending.prompts]
            responses = [r for pending in batch for r in pending.responses]
            try:
                rewards = await asyncio.to_thread(self.score, prompts, responses)
            except Exception as error:  # every waiting request learns of it; the server goes on
                logger.exception("scoring a batch of %d rows failed", len(responses))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.batches += 1
            self.rows += len(responses)
            start = 0
            for pending in batch:
                stop = start + len(pending.responses)
                if not pending.future.done():
                    pending.future.set_result(rewards[start:stop])
                start = stop


def split_queries(
    queries: Sequence[str], prompts: Sequence[str] | None, separator: str | None
) -> tuple[list[str], list[str]]:
    """(prompts, responses) of OpenRLHF-style queries by the rules in the module docstring.

    Raises:
        ValueError: naming the first query that cannot be split.
    """
    if prompts is not None:
        if len(prompts) != len(queries):
            raise ValueError(f"'query' has {len(queries)} items but 'prompts' has {len(prompts)}")
        responses = []
        for index, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
            if not query.startswith(prompt):
                raise ValueError(
                    f"query {index} does not start with its prompt; send 'prompts' and 'responses' instead"
                )
            responses.append(query[len(prompt) :])
        return list(prompts), responses
    if separator is None:
        raise ValueError(
            "'query' alone needs a rule to split prompt from response: start the server with "
            "--query-separator (the text before the response, such as the chat template's "
            "assistant marker), or send 'prompts' with the queries, or 'prompts' and 'responses'"
        )
    split_prompts, responses = [], []
    for index, query in enumerate(queries):
        at = query.rfind(separator)
        if at < 0:
            raise ValueError(f"query {index} does not contain the separator {separator!r}")
        split_prompts.append(query[:at])
        responses.append(query[at + len(separator) :])
    return split_prompts, responses


def create_app(
    score: Callable,
    *,
    query_separator: str | None = None,
    max_batch_rows: int = 256,
    max_wait_ms: float = 5.0,
    normalize: tuple[float, float] | None = None,
    description: dict | None = None,
):
    """The FastAPI application serving ``score`` (see the module docstring).

    Args:
        score: ``(prompts, responses) -> (N,) rewards``, such as a :class:`TextScorer`.
        query_separator: how a bare ``query`` splits into prompt and response.
        max_batch_rows, max_wait_ms: the batching across concurrent requests.
        normalize: ``(mean, std)``: serve ``(reward - mean) / std`` (the training rows' statistics).
        description: what ``GET /health`` reports about the model.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field

    batcher = RequestBatcher(score, max_batch_rows, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="pyro_irm reward server", lifespan=lifespan)

    class RewardRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")  # OpenRLHF also sends "labels"
        query: list[str] | None = Field(None, max_length=MAX_REQUEST_ROWS)
        prompts: list[str] | None = Field(None, max_length=MAX_REQUEST_ROWS)
        responses: list[str] | None = Field(None, max_length=MAX_REQUEST_ROWS)

    class Row(BaseModel):
        model_config = ConfigDict(extra="ignore")
        prompt: str
        response: str

    class ScoreRequest(BaseModel):
        rows: list[Row] = Field(max_length=MAX_REQUEST_ROWS)

    async def rewards_of(prompts: list[str], responses: list[str]) -> list[float]:
        rewards = np.asarray(await batcher.submit(prompts, responses), dtype=np.float64)
        if normalize is not None:
            rewards = (rewards - normalize[0]) / normalize[1]
        return rewards.tolist()

    @app.exception_handler(ValueError)
    async def bad_request(request, error: ValueError):
        return JSONResponse(status_code=400, content={"detail": str(error)})

    @app.post("/get_reward")
    async def get_reward(request: RewardRequest) -> dict:
        if request.responses is not None:
            if request.prompts is None or len(request.prompts) != len(request.responses):
                raise ValueError("'responses' needs 'prompts' of the same length")
            prompts, responses = request.prompts, request.responses
        elif request.query is not None:
            prompts, responses = split_queries(request.query, request.prompts, query_separator)
        else:
            raise ValueError(
                "send 'query' (with 'prompts', or split by --query-separator) or 'prompts' and 'responses'"
            )
        return {"rewards": await rewards_of(prompts, responses)}

    @app.post("/score")
    async def score_rows(request: ScoreRequest) -> dict:
        rewards = await rewards_of([r.prompt for r in request.rows], [r.response for r in request.rows])
        probability = (1.0 / (1.0 + np.exp(-np.asarray(rewards)))).tolist() if normalize is None else None
        return {
            "scores": [
                {"reward": reward, **({} if probability is None else {"preference_probability": p})}
                for reward, p in zip(rewards, probability or [None] * len(rewards), strict=True)
            ]
        }

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **(description or {}), "batches": batcher.batches, "rows": batcher.rows}

    app.state.batcher = batcher
    return app
