"""Entry points: ``python -m launch.<name>`` (train, sample, convert, tpu) from a checkout.

An installed jaxlab ships this folder as ``jaxlab.launch`` (console scripts ``jaxlab-train``, ...;
see ``launch/cli.py``). Modules in here import each other relatively (``from .x import y``) so
that both names work.
"""

if __name__ != "launch":  # installed as jaxlab.launch: config files say ``from configs.common import ...``
    from .. import configs as _configs  # noqa: F401  (registers the ``configs`` name; see configs/__init__.py)
