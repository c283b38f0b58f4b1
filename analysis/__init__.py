"""Error analysis of a run (analyze.py): the HTML report, its figures and metrics, and the comparison of runs."""
