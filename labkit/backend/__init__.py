"""Instagram building blocks the notebooks build up (schema, ids, likes, cache + leases, ...)."""
