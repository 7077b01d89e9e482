"""report: a run's figures gathered into report.json (`build`) and drawn as one self-contained
HTML page (`html`, with the loop's rounds in `rounds`). May import: core, data, tasks, student,
teacher, curation.
"""
