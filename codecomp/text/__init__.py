"""Byte-text utilities shared by the corpus builder, the models and the server: tokens, digests, MinHash.

Nothing here imports torch, tree-sitter or the server: every layer may use it.
"""
