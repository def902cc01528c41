"""Experiment configs: ``configs/<family>.py`` defines ``get_config(variant)``.

An installed jaxlab ships this folder as ``jaxlab.configs`` (no top-level ``configs`` in
site-packages). Config files are loaded by path (``--config=<file>.py:<variant>``), not as package
modules, so they import their shared helpers by the short name (``from configs.common import ...``);
when this package is imported as ``jaxlab.configs``, it registers itself under that short name for
the running process, unless a ``configs`` module was imported first.
"""

import sys

if __name__ != "configs":
    sys.modules.setdefault("configs", sys.modules[__name__])
