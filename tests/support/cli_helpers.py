"""Reading what a gvtool command printed, shared by the CLI tests."""


def error_line(result) -> str:
    """The one "error:" line of a failed command, after checking it failed the way gvtool promises."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def said(result) -> str:
    """stderr with rich's line wrapping undone (it wraps at 80 columns when not on a terminal)."""
    return " ".join(result.stderr.split())
