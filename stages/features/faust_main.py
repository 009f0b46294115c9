"""Lazy factory module for the plain Faust command line:

    faust -A stages.features.faust_main worker -l info

`faust -A` reads the module attribute `app`; it is built on first access (PEP 562
`__getattr__`) from the environment (FRESHREC_* and FRESHREC_FEATURES_* settings), so importing
this module does no work and holds no app.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(name)
    from stages.common.settings import CommonSettings, load_settings
    from stages.features.app import create_app
    from stages.features.settings import FeaturesSettings

    app = create_app(load_settings(CommonSettings), load_settings(FeaturesSettings))
    globals()["app"] = app  # the same app on every later access
    return app
