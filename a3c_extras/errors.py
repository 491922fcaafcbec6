"""Errors as the user reads them: one line."""


def first_line(error: Exception, limit: int = 200) -> str:
    """An error's message in one line (torch's and Ray's run over many), or its type's name if it has none."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:limit]
