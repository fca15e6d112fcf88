"""pytest runs the solution notebooks (nbval); solutions/wrong/ holds wrong answers, not
lessons: they are graded by tests/grading/test_wrong_answers.py, never run as notebooks."""

collect_ignore_glob = ["wrong/*"]
