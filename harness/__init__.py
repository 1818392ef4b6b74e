"""ebm-bench's harness: the ``ebm-bench`` command line, suites, planning, execution on Ray,
Optuna tuning and Parquet results (see docs/ARCHITECTURE.md). Nothing heavy is imported here."""
