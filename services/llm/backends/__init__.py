"""Ways of running a text-generation model: transformers, ONNX Runtime, the OpenAI API."""
