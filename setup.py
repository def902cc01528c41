"""Which packages the wheel holds; metadata and dependencies are in setup.cfg.

The checkout's top-level ``launch/`` and ``configs/`` folders ship inside jaxlab's namespace, as
``jaxlab.launch`` and ``jaxlab.configs`` (a ``package_dir`` mapping): an installed jaxlab adds only
the name ``jaxlab`` to site-packages, never generic names such as ``configs`` or ``launch``.
Console scripts (``jaxlab-train``, ...) are declared in setup.cfg.
"""

from setuptools import find_packages, setup

# Checkout folder -> package name in the wheel.
SHIPPED_UNDER_JAXLAB = {"launch": "jaxlab.launch", "configs": "jaxlab.configs"}


def packages_and_dirs() -> tuple[list[str], dict[str, str]]:
    packages = find_packages(include=["jaxlab", "jaxlab.*"])
    package_dir = {}
    for folder, name in SHIPPED_UNDER_JAXLAB.items():
        for package in find_packages(include=[folder, f"{folder}.*"]):
            shipped = name + package[len(folder) :]
            packages.append(shipped)
            package_dir[shipped] = package.replace(".", "/")
    return packages, package_dir


packages, package_dir = packages_and_dirs()
setup(packages=packages, package_dir=package_dir)
