"""The chain explorer (issue #8): pages for court clerks and bureau auditors, served by
every node under ``/explorer``. See docs/explorer.md.

    from node.explorer import mount_explorer, RuntimeBackend
    mount_explorer(app, RuntimeBackend(runtime))
"""

from node.explorer.app import (
    Explorer,
    ExplorerSettings,
    Viewer,
    create_explorer_router,
    mount_explorer,
)
from node.explorer.port import ExplorerBackend

__all__ = [
    "Explorer",
    "ExplorerBackend",
    "ExplorerSettings",
    "Viewer",
    "create_explorer_router",
    "mount_explorer",
]
