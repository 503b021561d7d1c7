"""Keeping and sharing results: run history, reports (JSON, CSV, Markdown) and settings links.
"""
