"""Session numbers: the pure assignment (sessions.py), the lock file that keeps
them stable between runs (lockfile.py), and the inventory-level plan joining
the two (plan.py)."""
