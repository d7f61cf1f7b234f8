"""The HTTP layer: the Tabby-compatible app, its middleware, the server assembly and `codecomp-serve`."""
