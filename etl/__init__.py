"""etl-migrate: move an MLflow FileStore tree into an MLflow SQLite database."""

__version__ = "0.1.0"
