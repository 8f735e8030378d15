"""UI tests driven by chromedriver: developer-only junk that must never ship."""

raise SystemExit("uitests.py is not part of any image")
