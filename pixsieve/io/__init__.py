"""pixsieve.io."""
