"""stages: the recipes, one module per verb (ingest, generate, curate, train, evaluate, export,
analyse), each read top to bottom. A stage reads earlier stages' manifests from the workspace
and writes its own. May import every library room (core, data, tasks, student, teacher,
curation, serving, report); never another stage, the cluster, the UI or the CLI.
"""
