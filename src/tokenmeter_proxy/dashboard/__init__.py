"""The usage dashboard and the embeddable session widget: HTML templates, strings (English,
German), our own CSS and JavaScript (SVG charts, no library, nothing fetched from elsewhere),
and the routes that serve them (`routes.py`)."""
