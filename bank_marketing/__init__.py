"""bank-marketing: predict term-deposit subscriptions and keep the prediction good as data drifts.

The package root imports nothing heavy. The libraries (``data``, ``training``, ``monitoring``,
``serving``) are plain Python; ``orchestration`` is the Dagster code that runs them as an asset
graph (``bank_marketing.orchestration.definitions`` is the code location); ``cli`` is the
``bank-marketing`` command.
"""
