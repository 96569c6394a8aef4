"""pixsieve.executors."""
