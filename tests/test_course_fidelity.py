"""The six files hold the course's own code: each line of the course's files (tests/course/, re-typed
as its learners have them, without their comments) is found in ours, in order, unless docs/course.md
lists it with what took its place and why; and each line docs/course.md says took a place is there."""

import re

import pytest

from conftest import ROOT

COURSE = ["main", "model", "train", "test", "my_optim", "envs"]


def code_lines(path) -> list[str]:
    """A file's statements without comments, blank lines or indentation."""
    lines = []
    for line in path.read_text().splitlines():
        code = re.split(r"\s+#|^#", line.strip(), maxsplit=1)[0].strip()
        if code:
            lines.append(code)
    return lines


def listed_changes() -> dict[str, dict[str, str]]:
    """docs/course.md's tables: per file, each course line that changed -> what stands in its place."""
    changes, current = {}, None
    for line in (ROOT / "docs" / "course.md").read_text().splitlines():
        heading = re.match(r"^## `?(\w+)\.py`?", line)
        if heading:
            current = changes.setdefault(heading.group(1), {})
        row = re.match(r"^\| `(.+?)` \| (.+?) \|", line)
        if row and current is not None:
            ours = re.match(r"`(.+)`$", row.group(2).strip())
            current[row.group(1).replace("\\|", "|")] = ours.group(1).replace("\\|", "|") if ours else None
    return changes


@pytest.mark.parametrize("name", COURSE)
def test_each_course_line_is_ours_in_order_or_listed_with_its_reason(name):
    course = code_lines(ROOT / "tests" / "course" / f"{name}.txt")
    ours = code_lines(ROOT / f"{name}.py")
    changes = listed_changes().get(name, {})
    position, missing = 0, []
    for line in course:
        if line in changes:
            continue
        try:
            position = ours.index(line, position) + 1
        except ValueError:
            missing.append(line)
    assert not missing, f"{name}.py lacks, in the course's order, these lines docs/course.md does not list: {missing}"


@pytest.mark.parametrize("name", COURSE)
def test_what_docs_course_says_took_a_course_line_s_place_is_there(name):
    ours = code_lines(ROOT / f"{name}.py")
    course = code_lines(ROOT / "tests" / "course" / f"{name}.txt")
    for course_line, replacement in listed_changes().get(name, {}).items():
        assert course_line in course, f"docs/course.md lists a line the course's {name}.py does not have: {course_line}"
        if replacement is not None:
            assert replacement in ours, f"docs/course.md says {name}.py has: {replacement}"
