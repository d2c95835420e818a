"""The deadline tracker: obligations per case from the agreements, alerts when they fall due."""
