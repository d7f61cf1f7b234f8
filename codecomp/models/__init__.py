"""Models: plain `nn.Module`s in `components/`, the LightningModules that train them beside."""
