"""Decisions: what AWS should look like for each kind, and what to do next. No kopf here."""
