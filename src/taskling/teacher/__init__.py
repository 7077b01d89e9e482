"""teacher: asking a large model, and keeping account of every question.

Backends by name (`backends/`: llama.cpp, transformers, OpenAI-compatible, scripted; `open_for`
opens one where the executor runs the work), the call log that is also the cache (`calls`), the
LLM judge (`judge`), how the teacher budget is split over arms (`allocate`) and spent per round
(`budget`), and a misbehaving OpenAI-compatible server for tests and benchmarks (`faults`).
May import: core, data, tasks, student.
"""
