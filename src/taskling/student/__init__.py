"""student: the small model that is trained, and everything that runs it.

Where models come from, embedded or local (`models`), GGUF conversion, quantization and
llama.cpp helpers (`gguf`), the Ollama Modelfile (`ollama`), batched chat generation and label
scoring with transformers (`infer`), what training learns from (`batches`: encoding, batch
order, the completion-only loss), the one training loop (`train`: `fit` over a
`core.executor.Site`, here or in a Ray worker), the trained result (`trained`) and an open-book
student's RAFT training rows (`openbook`).
May import: core, data, tasks.
"""
