"""Figures and HTML for the reports."""
