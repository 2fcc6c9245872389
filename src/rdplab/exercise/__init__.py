"""Graded exercises for trainees (``rdplab exercise``): a scenario picked from a seed and
broken without telling which, read-only views of the broken machines, and grading of the
trainee's diagnosis (``answer``) or of their repair on a real lab (``check``).

Every piece is a composition of the lab's own parts: the lab file's machines and network
(``Lab.compose``), the lifecycle steps of ``rdplab.scenario`` (``BREAK``, ``DIAGNOSE``),
the twins (views) and the catalog (causes, fixes and their risk).

pick.py    which scenario a seed gives, and its id
state.py   the state file: what the trainee may read, and the sealed answer
run.py     the step sequences: break it, show the symptom, rebuild it, check a repair
grade.py   answers and repairs to verdicts and a score
views.py   the twins as Windows tools print them
summary.py many trainees' results as one HTML page and a CSV
"""
