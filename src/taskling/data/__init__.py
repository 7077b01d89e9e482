"""data: documents in, and the pile they become.

Converters per file format (`formats/`), structure-aware chunking (`chunking`), the SQLite pile
with FTS5 and provenance (`pile`), duplicates (`dedup`), sentence embeddings (`embed`), topics
(`topics`), organising a pile after ingest (`organise`), tables found in documents (`tables`)
and the retriever that reads the pile (`retrieve`). May import: core.
"""
