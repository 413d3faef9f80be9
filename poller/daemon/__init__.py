"""`poller run`'s wiring: the daemon, its schedule and its clock watcher."""
