"""Answering "what happened with market X at time T?" from the telemetry dora_otel records.

* :mod:`~dora_otel.query.explain` — one decision's story, or every decision of a market around a time;
* :mod:`~dora_otel.query.reconcile` — every decision of a range, expected vs done (and vs the exchange),
  telemetry loss told apart from trading failure;
* :mod:`~dora_otel.query.verdicts` — the per-slot verdict rules (pure functions);
* :mod:`~dora_otel.query.local` / :mod:`~dora_otel.query.aws` — the two backends (SQLite + log/spans
  files; DynamoDB + CloudWatch Logs Insights), behind :class:`~dora_otel.query.sources.Source`;
* :mod:`~dora_otel.query.times`, :mod:`~dora_otel.query.render`, :mod:`~dora_otel.query.cli`.

Importing this package imports neither boto3 nor the backends.
"""
