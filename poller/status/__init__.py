"""What people and Prometheus see: metrics, history, the status server and page, and
the scan's reports."""
