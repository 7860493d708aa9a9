"""The vision service: detection, streamed detection, OCR, image classification, segmentation, generation."""
