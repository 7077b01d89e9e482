"""teacher: asking a large model, and keeping account of every question.

Backends by name (`backends/`: llama.cpp, transformers, OpenAI-compatible, scripted), the call
log that is also the cache (`calls`), the LLM judge (`judge`), how the teacher budget is split
over arms (`allocate`) and a misbehaving OpenAI-compatible server for tests and benchmarks
(`faults`). May import: core, data, tasks, student.
"""
