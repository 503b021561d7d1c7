"""Judging: verdicts, image similarity and the headless check.
"""
