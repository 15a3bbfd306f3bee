"""What MLflow's SQL schema cannot hold as written, shared by the loader and the verifier.

A plain constant, not a function: the loader (etl/source) and the verifier (etl/verify) each
apply it with their own code, so a slip in one cannot pass the other's check.
"""

from __future__ import annotations

# MLflow's SQL store writes +-Inf as the largest finite double of that sign
# (SqlAlchemyStore.sanitize_metric_value); SQL REAL columns cannot hold IEEE infinities.
FLOAT_MAX = 1.7976931348623157e308
