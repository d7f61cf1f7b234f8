"""Plain `nn.Module`s, free of Lightning and of configuration."""
