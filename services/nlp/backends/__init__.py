"""NLP backends: ONNX Runtime encoders (embeddings, classifier heads) and fastText language identification."""
