"""pixsieve.dedup."""
