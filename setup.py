"""The one packaging rule pyproject.toml cannot state: the repository's ``plugins/`` folder
(the built-in backends) installs as the package ``keyval_plugins``, because a top-level
``plugins`` collides with any other package of that name. pyproject.toml holds the rest."""
from setuptools import find_packages, setup

BUILTINS_FOLDER = "plugins"
BUILTINS_PACKAGE = "keyval_plugins"

builtins = [BUILTINS_PACKAGE + name[len(BUILTINS_FOLDER):]
            for name in find_packages(include=[BUILTINS_FOLDER, f"{BUILTINS_FOLDER}.*"])]
setup(
    packages=find_packages(include=["keyval", "keyval.*", "kvctl", "kvctl.*"]) + builtins,
    package_dir={BUILTINS_PACKAGE: BUILTINS_FOLDER},
)
