"""Gateway calls tied to their HTTP connection: cancelled when the client goes; streams relayed as SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

import grpc
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from facade.openai.errors import OpenAIError, from_status

__all__ = ["ClientGone", "EventChunks", "EventStream", "unless_disconnected"]

T = TypeVar("T")
_DONE = b"data: [DONE]\n\n"


class EventChunks(Protocol):
    """What an EventStream sends for each gateway message: the events' data (translation.StreamChunks for
    completions; the console's job events)."""

    def of(self, reply: Any) -> Iterable[Mapping[str, Any]]: ...


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready; the gateway call was cancelled."""


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (the body is read by then: every message left is a disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _watch(receive: Receive, call: grpc.aio.Call) -> asyncio.Future[None]:
    """A task that cancels `call` when the client disconnects (cancel the task to stop watching)."""
    watcher = asyncio.ensure_future(_disconnected(receive))
    watcher.add_done_callback(lambda done: done.cancelled() or call.cancel())
    return watcher


def _fired(watcher: asyncio.Future[None]) -> bool:
    return watcher.done() and not watcher.cancelled()


async def unless_disconnected(receive: Receive, call: grpc.aio.Call, step: Awaitable[T]) -> T:
    """`step` of `call` (the reply, or a stream's first message); ClientGone, with the call cancelled, if the
    client disconnects first."""
    watcher = _watch(receive, call)
    try:
        return await step
    except (asyncio.CancelledError, grpc.aio.AioRpcError):
        if _fired(watcher):
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()


def _event(data: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class EventStream(Response):
    """An ASGI response relaying a gateway stream as server-sent events: the chunks of each message as it comes,
    then `data: [DONE]`. A failure mid-stream is an `error` event in OpenAI's shape (OpenAI's SDKs raise it);
    a client that disconnects cancels the gateway call at once, which stops the generation."""

    media_type = "text/event-stream"

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall,
        first: Any,
        chunks: EventChunks,
        headers: Mapping[str, str],
        param_names: Mapping[str, str],
    ) -> None:
        self.call = call
        self.first = first
        self.chunks = chunks
        self.param_names = param_names
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = _watch(receive, self.call)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            reply = self.first
            while reply is not grpc.aio.EOF:
                body = b"".join(_event(chunk) for chunk in self.chunks.of(reply))
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                reply = await self.call.read()
            tail = _DONE
        except (asyncio.CancelledError, grpc.aio.AioRpcError) as exc:
            if _fired(watcher):
                return  # the client is gone: nobody reads the rest
            if not isinstance(exc, grpc.aio.AioRpcError):
                raise
            tail = _event(from_status(exc, self.param_names).body())
        except OpenAIError as error:  # the gateway's message says the generation was cut short
            tail = _event(error.body())
        finally:
            watcher.cancel()
            self.call.cancel()
        await send({"type": "http.response.body", "body": tail, "more_body": False})
