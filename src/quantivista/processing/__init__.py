"""Processing: normalization of provider data and cross-provider reconciliation."""
