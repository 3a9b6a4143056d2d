"""Monitoring: the champion's monthly predictions, drift against its reference data, and the
month's realized quality.

Imports nothing from Dagster; the assets in ``bank_marketing.assets.monitoring`` call it.
"""
