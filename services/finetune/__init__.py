"""The fine-tuning service: training jobs in worker processes that register their result for serving."""
