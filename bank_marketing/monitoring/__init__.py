"""Monitoring: the champion's monthly predictions, drift against its reference data, and the
month's realized quality; the monitoring database (``store``) and the Grafana alerts the
webhook keeps in it (``alerts``).

Imports nothing from Dagster; the assets in
``bank_marketing.orchestration.assets.monitoring`` call it.
"""
