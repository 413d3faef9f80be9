"""The pool: members and their states, the checks and sweeps' results, the guard, the state file."""
