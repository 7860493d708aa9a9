"""The web console in the HTTP facade: models, `auto`'s decisions, fine-tuning jobs and a playground, in a browser."""

__all__: list[str] = []
