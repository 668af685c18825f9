"""The admin web UI at ``/ui/``: server-rendered pages over the existing admin and report RPCs.

Server-rendered (Jinja2, autoescaped) rather than a static app: the caller's key then lives in an
HttpOnly cookie no script can read, every page works without JavaScript (so a headless browser
test sees exactly what a user sees), and nothing is built or fetched at run time. The UI decides
nothing: auth says what a key may administer, the router whose usage it may read.
"""

from edge.ui.routes import router

__all__ = ["router"]
