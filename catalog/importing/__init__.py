"""Bulk product import: CSV + images ZIP, TSV of text and base64 images, JSON Lines.

`readers` streams records, `rows` validates them, `images` checks and fetches images,
`services` upserts in batches, `selectors` reads jobs and reports, `admin` is the page.
"""
