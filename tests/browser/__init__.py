"""Browser tests of the playground page (Debian's Chromium, driven by Playwright)."""
