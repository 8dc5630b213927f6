"""The embedded backend: bars in Arrow IPC files (a Parquet cold tier; Parquet partitions of
older stores still read), side data in Parquet files, SQLite for the job catalog."""
