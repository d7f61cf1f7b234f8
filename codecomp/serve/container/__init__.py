"""A model container: one process that loads a checkpoint through its completer and answers batches."""
