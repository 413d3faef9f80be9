"""Everything that talks to HAProxy: its runtime API, its master CLI, its config checker."""
