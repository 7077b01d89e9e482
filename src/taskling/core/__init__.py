"""core: what every other room stands on.

The task file and its typed config (`config`), errors a user reads (`errors`), the workspace on
disk with atomic writes and the stage runner that caches by fingerprint (`workspace`), progress
bars (`progress`), the append-only journal (`journal`) and the executor a stage spreads its work
with (`executor`). May import: nothing else from taskling.
"""
