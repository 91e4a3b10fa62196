"""Ingest: scan folders, decode images safely, embed and record them."""
