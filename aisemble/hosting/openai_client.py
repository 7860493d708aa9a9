"""The OpenAI SDK client for any OpenAI-compatible endpoint, and the mapping of its errors to ours."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from aisemble.config.models import ModelSpec
from aisemble.errors import (
    AisembleError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from aisemble.hosting.settings import ModelSettings, setting

__all__ = ["OpenAIClientSettings", "api_key_for", "make_client", "map_openai_error"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(name: str) -> str | None:
    return None if _ENV_NAME.fullmatch(name) else f"must be an environment variable name (got {name!r})"


@dataclass(frozen=True)
class OpenAIClientSettings(ModelSettings):
    """The registry params of every OpenAI-endpoint backend: `api_key_env` (the variable holding the API key)
    and `timeout_s` (per call; a backend's subclass may give it another default)."""

    api_key_env: str = setting("OPENAI_API_KEY", check=_env_name)
    timeout_s: float = setting(60.0, above=0)


def api_key_for(spec: ModelSpec, settings: OpenAIClientSettings) -> str:
    """The API key: the variable named by params.api_key_env (default OPENAI_API_KEY). Never logged."""
    env_name = settings.api_key_env
    key = os.environ.get(env_name, "")
    if not key:
        raise FailedPreconditionError(
            f"model '{spec.name}' needs an API key in the environment variable {env_name}",
            reason="API_KEY_MISSING",
            metadata={"model": spec.name, "env": env_name},
        )
    return key


def make_client(spec: ModelSpec, settings: OpenAIClientSettings) -> Any:
    """An openai.OpenAI client for the model's endpoint, with the settings its backend parsed at load;
    retries are ours to decide (none here)."""
    from openai import OpenAI

    return OpenAI(
        api_key=api_key_for(spec, settings),
        base_url=spec.endpoint or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        timeout=settings.timeout_s,
        max_retries=0,
    )


def _retry_after(exc: Any, default: float = 1.0) -> float:
    response = getattr(exc, "response", None)
    header = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(header)) if header is not None else default
    except ValueError:
        return default


def map_openai_error(exc: Exception, model: str) -> AisembleError:
    """Our status for an SDK error: 401 UNAUTHENTICATED, 429 RESOURCE_EXHAUSTED (+RetryInfo), timeout
    DEADLINE_EXCEEDED, 5xx / connection UNAVAILABLE (+RetryInfo), 400/422 INVALID_ARGUMENT, 404 NOT_FOUND."""
    import openai

    metadata = {"model": model, "provider": "openai"}
    status = getattr(exc, "status_code", None)
    if status is not None:
        metadata["http_status"] = str(status)
    detail = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, openai.APITimeoutError):
        return DeadlineExceededError(f"the OpenAI endpoint did not answer in time: {detail}", metadata=metadata)
    if isinstance(exc, openai.APIConnectionError):
        return UnavailableError(
            f"cannot reach the OpenAI endpoint: {detail}",
            reason="UPSTREAM_UNREACHABLE",
            metadata=metadata,
            retry_after_s=1.0,
        )
    if isinstance(exc, openai.AuthenticationError):
        return UnauthenticatedError(f"the OpenAI endpoint refused the API key: {detail}", metadata=metadata)
    if isinstance(exc, openai.PermissionDeniedError):
        return PermissionDeniedError(f"the OpenAI endpoint denied access: {detail}", metadata=metadata)
    if isinstance(exc, openai.RateLimitError):
        return ResourceExhaustedError(
            f"the OpenAI endpoint is rate limiting: {detail}",
            reason="UPSTREAM_RATE_LIMITED",
            metadata=metadata,
            retry_after_s=_retry_after(exc),
        )
    if isinstance(exc, openai.NotFoundError):
        return NotFoundError(
            f"the OpenAI endpoint does not know this model: {detail}", reason="UPSTREAM_NOT_FOUND", metadata=metadata
        )
    if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError):
        return InvalidArgumentError(
            f"the OpenAI endpoint refused the request: {detail}", reason="UPSTREAM_INVALID", metadata=metadata
        )
    if isinstance(exc, openai.APIStatusError):
        return UnavailableError(
            f"the OpenAI endpoint failed ({status}): {detail}",
            reason="UPSTREAM_ERROR",
            metadata=metadata,
            retry_after_s=_retry_after(exc),
        )
    return UnavailableError(
        f"the OpenAI call failed: {detail}", reason="UPSTREAM_ERROR", metadata=metadata, retry_after_s=1.0
    )
