"""REST API under /api/v1/: one explicit view per endpoint, same services and selectors as the pages."""
