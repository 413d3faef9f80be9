"""Discovery: which addresses to try, how to ask them (ARP, TCP, HTTP), and the sweeps."""
