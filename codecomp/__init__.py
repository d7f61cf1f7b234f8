"""codecomp: neural code completion of C++ and JavaScript, from corpus to editor."""

from pathlib import Path

# The Hydra configs of the entry points (codecomp-data, -train, -eval, -serve).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
