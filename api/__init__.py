"""The executor API: writes desired state to PostgreSQL and reads status back. It never runs code."""
