"""Storage: where partition files live and how they are written atomically."""
