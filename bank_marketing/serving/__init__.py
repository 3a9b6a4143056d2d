"""Serving: the champion over HTTP. Imports nothing from Dagster, so it deploys alone on Ray."""
