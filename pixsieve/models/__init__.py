"""pixsieve.models."""
