"""One module per stage, one verb per stage: each has run(cfg, ctx) -> manifest."""
