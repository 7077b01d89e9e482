"""serving: a trained student answering requests.

The engine that loads an export, a GGUF, an HF folder or a bundle and runs its task (`engine`),
the OpenAI-compatible HTTP server (`serve`) and batch prediction over CSV/JSONL (`predict`).
May import: core, data, tasks, student, teacher.
"""
