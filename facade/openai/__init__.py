"""The OpenAI-compatible HTTP API (chat, completions, embeddings, models) over the gateway's gRPC services."""

from facade.openai.app import build_app
from facade.openai.server import run

__all__ = ["build_app", "run"]
