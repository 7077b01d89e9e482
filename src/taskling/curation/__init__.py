"""curation: which generated examples are worth learning from, and with which label.

The filters (`filters`: language, duplicates, decontamination, selection), the person-checked
gold set (`gold`), curate's candidates as a reader sees them (`candidates`), train/eval/dev
splits by source (`split`), a person's review decisions (`review`), weak supervision (`weak`:
the sources that vote on a label; `rules`: keyword and regex rules; `labelmodel`: Dawid-Skene
over their votes) and PII scrubbing (`pii`). May import: core, data, tasks, student, teacher.
"""
