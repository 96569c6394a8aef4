"""pixsieve.report."""
