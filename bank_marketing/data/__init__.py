"""Loading, typing and validating the UCI Bank Marketing contacts. Imports nothing from Dagster."""
