"""poller: keep HAProxy's backend equal to the web nodes really alive on a subnet.

The pull way: one sidecar sweeps the subnet, probes candidates over HTTP, tracks the pool
with rise/fall hysteresis and makes HAProxy agree. Nothing is installed in the app nodes.
"""

__version__ = "0.1.0"
