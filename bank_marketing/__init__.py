"""bank-marketing: predict term-deposit subscriptions and keep the prediction good as data drifts.

The package root imports nothing heavy: ``bank_marketing.definitions`` assembles the Dagster
code location, and the sub-packages hold the plain-Python parts it calls.
"""
