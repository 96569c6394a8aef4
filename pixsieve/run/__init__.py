"""The passes of a curation run: scan (hash), score, deduplicate, export."""
