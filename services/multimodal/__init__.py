"""The multimodal service: analyses an image and a text together by composing the vision and NLP services."""
