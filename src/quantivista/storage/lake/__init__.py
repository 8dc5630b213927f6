"""The embedded backend: Parquet files for bars and side data, SQLite for the job catalog."""
