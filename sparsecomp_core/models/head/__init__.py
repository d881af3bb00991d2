"""The dynamic-object head: neck, streaming temporal queries, losses (SPEC 6)."""
