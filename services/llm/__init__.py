"""The LLM service: completions and chat, unary and streamed, on local and remote models."""
