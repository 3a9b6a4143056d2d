"""Orchestration: the Dagster code that runs the libraries as an asset graph.

Assets and checks (``assets/``), the sensors, the resources, the one monthly partitions definition,
the code location (``definitions``), and the drivers that run it in-process (``runner``,
``replay``, ``live``). The libraries it calls (``data``, ``training``, ``monitoring``,
``serving``) never import it or Dagster: ``make lint`` checks that (import-linter).
"""
