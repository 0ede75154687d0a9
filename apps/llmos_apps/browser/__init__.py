"""The browser app: ``search``, ``open``, ``next_page`` and ``find_text`` for models.

Layout, outermost first:

* :mod:`.plugin`   the tools and the ``register_tools`` hook (entry point ``browser``)
* :mod:`.web`      live / archive / record, engine choice, page to :class:`~.web.WebPage`
* :mod:`.fetch`    guarded httpx fetching (size cap, content types, redirects, timeouts)
* :mod:`.chromium` one shared headless Chromium for pages that need JavaScript
* :mod:`.extract`  HTML to Markdown (tables kept), PDF to text, paging
* :mod:`.search`   SearXNG, Brave, DuckDuckGo and archive search providers
* :mod:`.archive`  the offline web archive format (``examples/web`` is one)
* :mod:`.warc`     WARC files read as a (read-only) archive
* :mod:`.guard`    the address guard and invisible-character cleaning
* :mod:`.config`   settings (``ToolContext.settings`` then environment variables)

Importing this package is cheap: Playwright is imported only when a page needs Chromium.
"""
