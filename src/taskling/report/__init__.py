"""report: a run's figures gathered into report.json (`build`) and drawn as one self-contained
HTML page (`html`; the loop's rounds in `rounds`, inline SVG charts in `charts`, text and tables
in `parts`). May import: core, data, tasks, student, teacher, curation.
"""
