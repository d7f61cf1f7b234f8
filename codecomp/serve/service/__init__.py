"""One completion request end to end: caches, the models asked, the deadline, the ranked answer, feedback."""
