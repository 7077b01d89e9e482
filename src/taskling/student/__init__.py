"""student: the small model that is trained, and everything that runs it.

Where models come from, embedded or local (`models`), GGUF conversion and llama.cpp helpers
(`gguf`), batched chat generation and label scoring with transformers (`infer`), and the one
LoRA training loop. May import: core, data, tasks.
"""
