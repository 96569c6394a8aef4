"""pixsieve.stages."""
