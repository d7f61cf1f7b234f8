"""Corpus shards and vocabularies: what training and evaluation read."""
