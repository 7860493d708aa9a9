"""The NLP service: embeddings, text classification and language detection."""
