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

Each request is checked alone before it joins a batch, and a batch that fails is scored again one
request at a time, so one bad request is answered 400 and the others in its batch are not. Bodies
over ``max_body_bytes`` are refused with 413 before they are read whole; errors name the field and
item, never echo the input. With an ``api_key`` every endpoint asks for ``Authorization: Bearer KEY``.
"""

# No `from __future__ import annotations`: FastAPI reads the request models from real annotations.

import asyncio
import hmac
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

MAX_REQUEST_ROWS = 8192
DEFAULT_MAX_BODY_BYTES = 16 * 2**20
DEFAULT_BODY_TIMEOUT_S = 30.0  # a request body that stops arriving this long is answered 408
DEFAULT_HEADER_TIMEOUT_S = 10.0  # a connection whose request headers take longer is closed
API_KEY_VARIABLE = "PYRO_IRM_API_KEY"


class TextScorer:
    """Rewards of (prompt, response) texts under a fitted run: its encoder, then its reward network.

    Args:
        run: a :class:`pyro_irm.runs.Run` fit from text (it names its encoder).
        device: where the encoder and the reward network run.
    """

    def __init__(self, run, device: str = "cpu"):
        if run.encoder is None:
            raise ValueError(
                f"{run.directory} was fit on precomputed embeddings, so it names no encoder to read "
                "texts with; fit it from text to serve it"
            )
        self.run = run
        self.encoder = run.text_encoder(device=device)
        stats = run.info.get("reward_stats") or {"mean": 0.0, "std": 1.0}
        self.mean, self.std = float(stats["mean"]), float(stats["std"]) or 1.0

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> "np.ndarray":
        """``(N,)`` float32 rewards (logits of P(preferred))."""
        import numpy as np

        from pyro_irm.encoders.embed import embed_rows

        if not responses:
            return np.zeros(0, dtype=np.float32)
        embeddings = embed_rows(list(prompts), list(responses), self.encoder)
        return self.run.reward_model.score(embeddings).numpy()


@dataclass
class _Request:
    """One request's rows, how many were handed to batches (``taken``) and scored (``scored``)."""

    prompts: list[str]
    responses: list[str]
    future: asyncio.Future
    rewards: "np.ndarray"
    taken: int = 0
    scored: int = 0

    @property
    def waiting(self) -> int:
        """Rows not yet handed to a batch (none once its client went away)."""
        return 0 if self.future.done() else len(self.responses) - self.taken


class RequestBatcher:
    """Gathers the rows of concurrent requests into batches for one scoring function, fairly.

    A batch holds at most ``max_batch_rows`` rows. Every request with rows waiting gets an equal share
    of each batch first (at least one row), and what is left is filled in turn, starting after the
    request the last batch started with; a large request is so scored in pieces, and a small one that
    arrives meanwhile is in the next batch, never behind the large one's whole.

    Args:
        score: ``(prompts, responses) -> (N,) rewards``; called in a worker thread, one batch at a time.
        max_batch_rows: most rows per batch.
        max_wait_ms: how long a batch that is not full waits for others to join it.
    """

    def __init__(self, score: Callable, max_batch_rows: int = 256, max_wait_ms: float = 5.0):
        self.score = score
        self.max_batch_rows = max_batch_rows
        self.max_wait = max_wait_ms / 1000.0
        self.batches = 0
        self.rows = 0
        self._requests: list[_Request] = []
        self._turn = 0
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def submit(self, prompts: list[str], responses: list[str]) -> "np.ndarray":
        """The rewards of these rows, scored in batches with whatever else is waiting."""
        if self._arrived is None:
            raise RuntimeError("RequestBatcher.start() was not awaited")
        import numpy as np

        future = asyncio.get_running_loop().create_future()
        if not responses:
            return np.zeros(0, dtype=np.float32)
        self._requests.append(_Request(prompts, responses, future, np.empty(len(responses), np.float32)))
        self._arrived.set()
        return await future

    def _waiting_rows(self) -> int:
        return sum(request.waiting for request in self._requests)

    async def _next_batch(self) -> list[tuple[_Request, int, int]]:
        """``[(request, start, stop)]``: the pieces of the next batch."""
        loop = asyncio.get_running_loop()
        while not self._waiting_rows():
            self._arrived.clear()
            await self._arrived.wait()
        deadline = loop.time() + self.max_wait
        while self._waiting_rows() < self.max_batch_rows and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return self._take()

    def _take(self) -> list[tuple[_Request, int, int]]:
        waiting = [r for r in self._requests if r.waiting]
        turn = self._turn % len(waiting)
        waiting = waiting[turn:] + waiting[:turn]
        self._turn += 1
        room = self.max_batch_rows
        share = max(1, room // len(waiting))
        pieces: dict[int, list] = {}
        for limit in (share, room):  # an equal share first, then the rest in turn
            for request in waiting:
                count = min(request.waiting, limit, room)
                if count <= 0:
                    continue
                piece = pieces.setdefault(id(request), [request, request.taken, request.taken])
                piece[2] += count
                request.taken += count
                room -= count
        return [tuple(piece) for piece in pieces.values()]

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                await self._score(batch)
            except Exception as error:
                if len(batch) == 1:  # the request learns of it; the server goes on
                    logger.warning(
                        "scoring %d rows of a request failed: %s", batch[0][2] - batch[0][1], error
                    )
                    self._fail(batch[0][0], error)
                    continue
                # One request's rows may have failed the batch: score each piece alone, so only it fails.
                logger.warning("a batch of %d requests failed (%s); scoring each alone", len(batch), error)
                for piece in batch:
                    try:
                        await self._score([piece])
                    except Exception as alone:
                        self._fail(piece[0], alone)

    async def _score(self, batch: list[tuple[_Request, int, int]]) -> None:
        prompts = [p for request, start, stop in batch for p in request.prompts[start:stop]]
        responses = [r for request, start, stop in batch for r in request.responses[start:stop]]
        rewards = await asyncio.to_thread(self.score, prompts, responses)
        self.batches += 1
        self.rows += len(responses)
        offset = 0
        for request, start, stop in batch:
            request.rewards[start:stop] = rewards[offset : offset + stop - start]
            offset += stop - start
            request.scored += stop - start
            if request.scored == len(request.responses) and request in self._requests:
                self._requests.remove(request)
                _settle(request.future, result=request.rewards)

    def _fail(self, request: _Request, error: Exception) -> None:
        if request in self._requests:
            self._requests.remove(request)
        _settle(request.future, error=error)


def _settle(future: asyncio.Future, result=None, error: Exception | None = None) -> None:
    if future.done():  # its client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers have not all arrived within
    ``seconds`` of its opening or of its last response: a client that sends its headers a byte at a
    time (slowloris) holds no connection for long. uvicorn itself has no such timeout."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._watch_headers()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._awaited and self._header_timer is not None:
                self._header_timer.cancel()  # a request's headers are in
                self._header_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._watch_headers()  # the next request on this connection

        def connection_lost(self, exc) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _watch_headers(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._awaited = self.cycle
            self._header_timer = self.loop.call_later(seconds, self._headers_late)

        def _headers_late(self) -> None:
            self._header_timer = None
            idle = self.cycle is None or self.cycle.response_complete  # no request in progress
            if self.cycle is self._awaited and idle and not self.transport.is_closing():
                logger.info("closing a connection whose request headers did not arrive in %g s", seconds)
                self.transport.close()

    return HeaderTimeoutProtocol


def check_texts(field: str, texts: Sequence[str]) -> None:
    """Refuse a text that no tokenizer can encode (a lone surrogate such as ``"\\ud800"``).

    Raises:
        ValueError: naming the field, the item and the character, not the text.
    """
    from pyro_irm.data.readers import invalid_text

    for index, text in enumerate(texts):
        if why := invalid_text(text):
            raise ValueError(f"'{field}' item {index}: {why}")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before it is read whole,
    whether it states its length or streams in chunks; a body that stops arriving for
    ``read_timeout`` seconds is answered 408 (a slow client never holds a request open)."""

    def __init__(self, app, limit: int, read_timeout: float = DEFAULT_BODY_TIMEOUT_S):
        self.app, self.limit, self.read_timeout = app, limit, read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        stated = dict(scope["headers"]).get(b"content-length")
        if stated is not None and stated.isdigit() and int(stated) > self.limit:
            return await self._refuse(send)
        received, started, refused = 0, False, False

        async def counted_receive():
            # Past the limit the client is answered 413 here; the application is told the client
            # left, and whatever it answers then goes nowhere.
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                refused = True
                if not started:
                    await self._answer(
                        send, 408, f"the request body stopped arriving for {self.read_timeout:g} s"
                    )
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not started:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message):
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, watched_send)

    async def _refuse(self, send) -> None:
        await self._answer(
            send,
            413,
            f"the request body is over the server's limit of {self.limit} bytes; send fewer rows per "
            "request, or start the server with a larger --max-body-mb",
        )

    @staticmethod
    async def _answer(send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    api_key: str | None = None,
    body_timeout_s: float | None = None,
):
    """The FastAPI application serving ``score`` (see the module docstring).

    Args:
        score: ``(prompts, responses) -> (N,) rewards``, such as a :class:`TextScorer`.
        query_separator: how a bare ``query`` splits into prompt and response.
        max_batch_rows, max_wait_ms: the batching across concurrent requests.
        normalize: ``(mean, std)``: serve ``(reward - mean) / std`` (the training rows' statistics).
        description: what ``GET /health`` reports about the model.
        max_body_bytes: the largest request body read (413 beyond it).
        body_timeout_s: a request whose body stops arriving this long gets 408 (default 30).
        api_key: when given, every request needs ``Authorization: Bearer <api_key>`` (401 without;
            the scheme in any case, the key compared as UTF-8 bytes); an empty key is refused.
    """
    from contextlib import asynccontextmanager

    if query_separator == "":
        raise ValueError(
            "--query-separator is empty: every query would split at its end, into the whole query as "
            "the prompt and an empty response; give the text before the response (the chat template's "
            "assistant marker), or leave it out"
        )
    from fastapi import FastAPI

    batcher = RequestBatcher(score, max_batch_rows, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="pyro_irm reward server", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=max_body_bytes, read_timeout=body_timeout_s or DEFAULT_BODY_TIMEOUT_S)

    if api_key is not None:
        _require_key(app, api_key)

    _add_routes(app, batcher, query_separator, normalize, description)
    app.state.batcher = batcher
    return app


def _require_key(app, api_key: str) -> None:
    """Every request needs ``Authorization: Bearer <api_key>`` (401 without)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    if not api_key:
        raise ValueError("api_key is empty: give a key, or None for no key")
    expected = api_key.encode("utf-8")

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        # Header values arrive as bytes decoded as latin-1: encoding back gives the bytes the
        # client sent, so a UTF-8 key matches. The scheme is case-insensitive (RFC 7235).
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        given = token.strip().encode("latin-1", errors="replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            return JSONResponse(
                status_code=401,
                content={"detail": "this server needs the header 'Authorization: Bearer <key>'"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)


def _request_models():
    """``(RewardRequest, ScoreRequest)``: the bodies of ``/get_reward`` and ``/score``."""
    from pydantic import BaseModel, ConfigDict, Field

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

    return RewardRequest, ScoreRequest


def _answer_faults(app) -> None:
    """A bad value is a 400 naming it; an invalid body a 415 (not JSON) or a 422 saying where and
    what, never echoing the input."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(ValueError)
    async def bad_request(request, error: ValueError):
        return JSONResponse(status_code=400, content={"detail": str(error)})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return JSONResponse(
                status_code=415,
                content={
                    "detail": f"the body must be JSON sent as 'Content-Type: application/json', "
                    f"not {kind or 'no content type'!r}"
                },  # fmt: skip
            )
        # Where and what, never the input itself: a client's texts stay out of answers and logs.
        problems = [
            {"loc": list(problem.get("loc", ())), "msg": problem.get("msg", ""), "type": problem.get("type")}
            for problem in error.errors()[:20]
        ]
        return JSONResponse(status_code=422, content={"detail": problems})


def _add_routes(app, batcher: RequestBatcher, query_separator, normalize, description) -> None:
    """``POST /get_reward`` (OpenRLHF's body), ``POST /score`` (rows) and ``GET /health``."""
    import numpy as np

    RewardRequest, ScoreRequest = _request_models()

    async def rewards_of(prompts: list[str], responses: list[str]) -> list[float]:
        rewards = np.asarray(await batcher.submit(prompts, responses), dtype=np.float64)
        if normalize is not None:
            rewards = (rewards - normalize[0]) / normalize[1]
        return rewards.tolist()

    _answer_faults(app)

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
        check_texts("prompts" if request.prompts is not None else "query", prompts)
        check_texts("responses" if request.responses is not None else "query", responses)
        return {"rewards": await rewards_of(prompts, responses)}

    @app.post("/score")
    async def score_rows(request: ScoreRequest) -> dict:
        check_texts("rows[].prompt", [r.prompt for r in request.rows])
        check_texts("rows[].response", [r.response for r in request.rows])
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
