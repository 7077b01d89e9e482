"""curation: which generated examples are worth learning from, and with which label.

The filters (`filters`: language, grounding, duplicates, decontamination, selection), a
person's review decisions (`review`), weak supervision (`weak`: the sources that vote on a
label; `rules`: keyword and regex rules; `labelmodel`: Dawid-Skene over their votes) and PII
scrubbing (`pii`). May import: core, data, tasks, student, teacher.
"""
