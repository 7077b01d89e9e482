"""data: documents in, and the pile they become.

Converters per file format, each returning text segments and tables (`formats/`), finding,
converting and storing source files (`ingest`), structure-aware chunking and placing table
rows in chunks (`chunking`), the SQLite pile with FTS5, provenance and tables (`pile`),
duplicates (`dedup`), sentence embeddings (`embed`), topics (`topics`), organising a pile after
ingest (`organise`), the pile's tables that a `tables:` entry names (`tables`) and the retriever
that reads the pile (`retrieve`). May import: core.
"""
