"""Training: windows of months, features inside the model, five families, metrics, the registry.

Imports nothing from Dagster; the assets in
``bank_marketing.orchestration.assets.training`` call it.
"""
