"""Making HAProxy serve the pool: decide what must change (`planning`, pure), then carry it
out (`executing`, HAProxy's sockets and files) and say what happened."""
