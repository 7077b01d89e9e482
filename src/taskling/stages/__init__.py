"""stages: the recipes, one module per verb (ingest, generate, curate, train, evaluate, export,
analyse), each read top to bottom. Each keeps the stage contract (core.stage): a `SPEC` saying
which config sections it reads, which finished stages it needs (this round's and the round
before's) and which typed manifest it writes, and `run(ctx)` returning that manifest. May import
every library room (core, data, tasks, student, teacher, curation, serving, report); never
another stage, the cluster, the UI or the CLI.
"""
