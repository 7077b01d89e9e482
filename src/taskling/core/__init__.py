"""core: what every other room stands on.

The task file and its typed config (`config`; its student: section and open- or closed-book in
`openbook`), the task-type contract and its one registry
(`tasktype`), errors a user reads (`errors`), the workspace on disk with atomic writes and a
frozen `Context` (`workspace`), the stage contract and its fingerprinting runner (`stage`), one
typed manifest per stage (`manifests`), the executor a stage spreads its work with and the
training `Site` (`executor`), installed packages and the cache derived from them (`packages`),
progress bars (`progress`), the append-only journal (`journal`), one writer per workspace
(`lock`), a worker process with time and memory limits for untrusted input (`sandbox`), tar
archives read without trusting their headers (`tarsafe`), and what both HTTP servers share below
their routes: loopback names, Host parsing, the listening socket (`net`). May import: nothing
else from taskling.
"""
