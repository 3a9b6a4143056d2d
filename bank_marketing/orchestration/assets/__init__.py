"""Dagster assets: thin glue over the plain-Python sub-packages."""
