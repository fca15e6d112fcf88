"""Exercise generator and autograder."""
