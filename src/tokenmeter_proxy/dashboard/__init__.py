"""The usage dashboard and the embeddable sidebar widget: HTML templates, strings (English,
German), our own CSS and JavaScript (SVG charts, no library, nothing fetched from elsewhere),
and the routes that serve them (`routes.py` the pages and sign-in, `widget.py` the widget and
its signed links)."""
