"""The web console's routes in the HTTP facade: the page and its script and style (public, they hold no data), and
the JSON and event-stream endpoints the page reads, each a gateway call with the caller's key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import grpc
from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aisemble.common.v1 import common_pb2
from aisemble.finetune.v1 import finetune_service_pb2 as fpb
from aisemble.registry.v1 import registry_service_pb2 as rpb
from aisemble.rpc.client import REQUEST_ID_KEY
from aisemble.vision.v1 import vision_service_pb2 as vpb
from facade.console.views import decision_rows, detections, event_of, job_of, model_rows
from facade.openai.errors import OpenAIError, from_validation
from facade.openai.streaming import EventStream, unless_disconnected
from facade.openai.upstream import CallOptions, GatewayClient, list_all_models

__all__ = ["CONTENT_SECURITY_POLICY", "DetectBody", "console_routes"]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Scripts, styles and fetches from this origin only: no inline script, no remote anything; images may be the
#: page's own blobs (an uploaded picture drawn on a canvas).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
#: The page's files: name -> media type (nothing else under static/ is served).
_FILES = {"console.html": "text/html", "console.js": "text/javascript", "console.css": "text/css"}
#: The most routing decisions one page asks for (each gateway keeps 256).
MAX_DECISIONS = 256


class DetectBody(BaseModel):
    """POST /console/api/detect: an image (base64 of the encoded file) and the detector (a name or `auto`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    image: Base64Bytes
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


def _static(name: str) -> bytes:
    return resources.files("facade.console").joinpath("static", name).read_bytes()


def _json(body: Any, options: CallOptions) -> JSONResponse:
    return JSONResponse(
        body, headers={**_SECURITY_HEADERS, "cache-control": "no-store", REQUEST_ID_KEY: options.request_id}
    )


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DECISIONS:
        raise OpenAIError.invalid("limit", f"limit must be an integer from 1 to {MAX_DECISIONS}, not {raw!r}")
    return int(raw)


class _JobEvents:
    """The watch's messages as event data, one event each."""

    def of(self, reply: fpb.WatchFineTuneJobResponse) -> list[dict[str, Any]]:
        return [event_of(reply.event)]


class ConsoleRoutes:
    """The console's endpoints over the facade's GatewayClient."""

    def __init__(self, gateway: GatewayClient) -> None:
        self.gateway = gateway
        self.files = {name: _static(name) for name in _FILES}

    def _options(self, request: Request) -> CallOptions:
        options = self.gateway.options(request.headers)
        request.state.request_id = options.request_id
        return options

    async def _each_replica(self, options: CallOptions, call: Callable[[Any, CallOptions], Awaitable[T]]) -> list[T]:
        """`call(stub, options)` on every gateway replica's registry at once (each keeps its own figures and
        decisions): the answers of those that answered; when none did, the first one's error."""
        answers = await asyncio.gather(
            *(call(stub, options) for stub in self.gateway.replica_registries), return_exceptions=True
        )
        answered = [answer for answer in answers if not isinstance(answer, BaseException)]
        if not answered:
            raise answers[0]  # type: ignore[misc]
        for answer in answers:
            if isinstance(answer, BaseException):
                log.warning("a gateway replica did not answer the console (request %s): %s", options.request_id, answer)
        return answered  # type: ignore[return-value]

    async def page(self, request: Request) -> Response:
        """GET /console: the page (no data in it: the script fetches it with the key the user gives)."""
        return Response(self.files["console.html"], media_type="text/html", headers=_SECURITY_HEADERS)

    async def file(self, request: Request) -> Response:
        """GET /console/console.js and /console/console.css."""
        name = request.path_params["name"]
        if name not in _FILES or name == "console.html":
            raise OpenAIError(404, f"unknown request URL: GET {request.url.path}", code="unknown_url")
        headers = {**_SECURITY_HEADERS, "cache-control": "no-cache"}
        return Response(self.files[name], media_type=_FILES[name], headers=headers)

    async def models(self, request: Request) -> Response:
        """GET /console/api/models: every model the key may see, with its health and figures over the replicas."""
        options = self._options(request)
        replicas = await self._each_replica(options, list_all_models)
        body = {"models": model_rows(replicas), "replicas": len(replicas), "replicas_total": self.gateway.replicas}
        return _json(body, options)

    async def decisions(self, request: Request) -> Response:
        """GET /console/api/decisions?limit=N: the newest `auto` decisions of every gateway replica."""
        limit = _limit(request)
        options = self._options(request)

        async def recent(stub: Any, options: CallOptions) -> list[rpb.RoutingDecision]:
            reply = await stub.ListRoutingDecisions(
                rpb.ListRoutingDecisionsRequest(max_decisions=limit), metadata=options.metadata, timeout=options.timeout
            )
            return list(reply.decisions)

        replicas = await self._each_replica(options, recent)
        return _json({"decisions": decision_rows(replicas, limit)}, options)

    async def jobs(self, request: Request) -> Response:
        """GET /console/api/jobs: the fine-tuning jobs (the newest 100), newest first."""
        options = self._options(request)
        reply = await self.gateway.finetune.ListFineTuneJobs(
            fpb.ListFineTuneJobsRequest(page_size=100), metadata=options.metadata, timeout=options.timeout
        )
        rows = sorted((job_of(job) for job in reply.jobs), key=lambda row: row["created_at"] or "", reverse=True)
        return _json({"jobs": rows}, options)

    async def job_events(self, request: Request) -> Response:
        """GET /console/api/jobs/{job_id}/events: WatchFineTuneJob as server-sent events, history first, until
        the job ends (then `data: [DONE]`); an unknown job is a 404 before the stream starts."""
        request.state.param_names = {}
        options = self._options(request)
        call = self.gateway.finetune.WatchFineTuneJob(
            fpb.WatchFineTuneJobRequest(job_id=request.path_params["job_id"]),
            metadata=options.metadata,
            timeout=options.timeout,
        )
        first = await unless_disconnected(request.receive, call, call.read())
        if first is grpc.aio.EOF:
            raise OpenAIError(502, "the gateway ended the job's watch without an event", code="empty_stream")
        headers = {**_SECURITY_HEADERS, REQUEST_ID_KEY: options.request_id}
        return EventStream(call, first, _JobEvents(), headers, request.state.param_names)

    async def detect(self, request: Request) -> Response:
        """POST /console/api/detect {"model", "image" (base64), "score_threshold"?}: VisionService.Detect."""
        try:
            body = DetectBody.model_validate_json(await request.body())
        except ValidationError as exc:
            raise from_validation(exc) from None
        request.state.param_names = {"image.data": "image"}  # the body's `image` is the gateway's image.data
        options = self._options(request)
        detect = vpb.DetectRequest(model=body.model, image=common_pb2.Image(data=body.image))
        if body.score_threshold is not None:
            detect.score_threshold = body.score_threshold
        call = self.gateway.vision.Detect(detect, metadata=options.metadata, timeout=options.timeout)
        reply = await unless_disconnected(request.receive, call, call)
        return _json(detections(reply), options)


def console_routes(gateway: GatewayClient) -> list[BaseRoute]:
    """The console's routes under /console, over the facade's gateway client."""
    routes = ConsoleRoutes(gateway)
    return [
        Route("/console", routes.page, methods=["GET"]),
        Route("/console/api/models", routes.models, methods=["GET"]),
        Route("/console/api/decisions", routes.decisions, methods=["GET"]),
        Route("/console/api/jobs", routes.jobs, methods=["GET"]),
        Route("/console/api/jobs/{job_id}/events", routes.job_events, methods=["GET"]),
        Route("/console/api/detect", routes.detect, methods=["POST"]),
        Route("/console/{name}", routes.file, methods=["GET"]),
    ]
