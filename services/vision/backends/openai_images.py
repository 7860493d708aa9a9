"""Image generation through the OpenAI Images API (or any OpenAI-compatible /images/generations endpoint)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from aisemble.errors import AisembleError, FieldViolation, InvalidArgumentError, UnavailableError
from aisemble.hosting.backend import Backend, RequestContext
from aisemble.hosting.openai_client import OpenAIClientSettings, make_client, map_openai_error
from aisemble.hosting.settings import setting
from services.vision.types import GeneratedImage, ImageGenerationRequest, ImageGenerationResult

__all__ = ["OpenAIImagesBackend", "OpenAIImagesSettings", "sniff_mime_type"]

_SIZE = re.compile(r"[1-9][0-9]*x[1-9][0-9]*")

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def sniff_mime_type(data: bytes, fallback: str = "application/octet-stream") -> str:
    """The media type of an encoded image from its first bytes."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return fallback


def _sizes(sizes: tuple[str, ...]) -> str | None:
    bad = [size for size in sizes if not _SIZE.fullmatch(size)]
    return f"each size must be WIDTHxHEIGHT, as 1024x1024 (got {bad!r})" if bad else None


@dataclass(frozen=True)
class OpenAIImagesSettings(OpenAIClientSettings):
    """A remote image-generation model's params (see OpenAIImagesBackend): the client's, with timeout_s 120 s."""

    timeout_s: float = setting(120.0, above=0)
    sizes: tuple[str, ...] = setting((), check=_sizes)
    max_images: int = setting(4, minimum=1)
    max_prompt_chars: int = setting(4000, minimum=1)
    response_format: str = setting("b64_json", choices=("b64_json", ""))
    seed_param: str = setting("")


class OpenAIImagesBackend(Backend):
    """POST /images/generations with response_format=b64_json; model_id is the remote model, endpoint the URL.

    params (all optional): api_key_env, timeout_s (default 120), sizes (allowed "WxH" values; default: any),
    max_images (default 4), max_prompt_chars (default 4000), response_format ("b64_json"; "" omits it, for
    models that always answer base64), seed_param (name of the body field that carries a seed, for
    endpoints that take one; default: seeds are not sent).
    """

    provider = "openai"
    tasks = frozenset({"image-generation"})
    #: This backend's settings in the registry entry's params, read once at load.
    settings_class: ClassVar[type[OpenAIImagesSettings]] = OpenAIImagesSettings

    def load(self) -> None:
        self.settings = settings = self.settings_class.for_serving(self.spec)
        self.client = make_client(self.spec, settings)
        self.remote_model = self.spec.model_id or self.spec.name
        self.sizes = settings.sizes
        self.max_images = settings.max_images
        self.max_prompt_chars = settings.max_prompt_chars
        self.response_format = settings.response_format
        self.seed_param = settings.seed_param

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.spec.name,
            "remote_model": self.remote_model,
            "base_url": str(self.client.base_url),
            "sizes": list(self.sizes),
        }

    def check(self, request: ImageGenerationRequest) -> None:
        """INVALID_ARGUMENT for what this model cannot do (size, count, prompt length)."""
        violations: list[FieldViolation] = []
        if len(request.prompt) > self.max_prompt_chars:
            violations.append(
                FieldViolation("prompt", f"is {len(request.prompt)} characters; the limit is {self.max_prompt_chars}")
            )
        if not 1 <= request.n <= self.max_images:
            violations.append(FieldViolation("n", f"must be between 1 and {self.max_images} for '{self.spec.name}'"))
        if (request.width == 0) != (request.height == 0):
            violations.append(FieldViolation("width", "set both width and height, or neither"))
        size = f"{request.width}x{request.height}"
        if request.width and self.sizes and size not in self.sizes:
            violations.append(
                FieldViolation(
                    "width", f"{size} is not a size '{self.spec.name}' makes; one of {', '.join(self.sizes)}"
                )
            )
        if violations:
            raise InvalidArgumentError(
                "; ".join(f"{v.field}: {v.description}" for v in violations),
                field_violations=violations,
                metadata={"model": self.spec.name},
            )

    def run(self, request: ImageGenerationRequest, ctx: RequestContext) -> ImageGenerationResult:
        self.check(request)
        ctx.check()
        arguments: dict[str, Any] = {"model": self.remote_model, "prompt": request.prompt, "n": request.n}
        if request.width:
            arguments["size"] = f"{request.width}x{request.height}"
        if self.response_format:
            arguments["response_format"] = self.response_format
        if request.seed is not None and self.seed_param:
            arguments["extra_body"] = {self.seed_param: request.seed}
        remaining = ctx.time_remaining
        if remaining is not None:
            arguments["timeout"] = max(0.05, remaining)
        try:
            response = self.client.images.generate(**arguments)
        except AisembleError:
            raise
        except Exception as exc:
            raise map_openai_error(exc, self.spec.name) from exc
        fallback = f"image/{getattr(response, 'output_format', None) or 'png'}"
        images: list[GeneratedImage] = []
        for item in response.data or []:
            if not item.b64_json:
                raise UnavailableError(
                    f"the endpoint of '{self.spec.name}' returned no image data (a URL instead?); "
                    "this backend asks for response_format=b64_json",
                    reason="UPSTREAM_INVALID_RESPONSE",
                    metadata={"model": self.spec.name},
                )
            try:
                data = base64.b64decode(item.b64_json, validate=True)
            except (binascii.Error, ValueError):
                raise UnavailableError(
                    f"the endpoint of '{self.spec.name}' returned image data that is not base64",
                    reason="UPSTREAM_INVALID_RESPONSE",
                    metadata={"model": self.spec.name},
                ) from None
            images.append(
                GeneratedImage(
                    data=data, mime_type=sniff_mime_type(data, fallback), revised_prompt=item.revised_prompt or ""
                )
            )
        if not images:
            raise UnavailableError(
                f"the endpoint of '{self.spec.name}' returned no images",
                reason="UPSTREAM_INVALID_RESPONSE",
                metadata={"model": self.spec.name},
            )
        return ImageGenerationResult(images=images)

    def cleanup(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()
