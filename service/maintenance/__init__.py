"""Work that is not an API request: purge, proactive refresh, reconcile, key rotation; and their schedules."""
