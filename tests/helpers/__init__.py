"""Test helpers, one module per area, imported as `helpers.<area>` (tests/ is on sys.path)."""
