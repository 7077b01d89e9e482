"""serving: a trained student answering requests.

What to serve and loading it (`target`: a run, a GGUF, an HF folder or a bundle), the engine
contract (`engine`) and its two engines (`llama`, `hf`), the task's answers from a served model
(`outputs`), the systems evaluate and the playground ask (`systems`), batch prediction over
CSV/JSONL (`predict`) and the OpenAI-compatible HTTP server: start-up (`serve`), the app and its
routes (`app`), request shapes and errors (`schema`), OpenAI's response format and streaming
(`wire`), the model thread (`worker`), key, size and metrics (`gate`).
May import: core, data, tasks, student, teacher.
"""
