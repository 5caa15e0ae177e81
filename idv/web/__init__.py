"""The web pages (`/web/...`): server-rendered Jinja2 templates, HTMX vendored as a static
file, sessions kept on the server (`idv.web.auth`)."""

from idv.web.pages import mount_pages

__all__ = ["mount_pages"]
