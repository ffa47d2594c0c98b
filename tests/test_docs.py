"""The README is a front page a newcomer reads in minutes; the reference lives in docs/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short_and_starts_with_what_the_project_is():
    assert len(README.splitlines()) <= 200
    assert README.startswith("# cnnpipe\n\nA reproducible image-classification pipeline")


def test_readme_gives_exactly_the_two_set_up_commands():
    setup = README.split("## Set-up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", setup, re.S)
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    assert commands == ["make repro", "make test"]


def test_every_docs_page_is_linked_from_the_readme_and_every_link_resolves():
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)\)", README))
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    assert linked == pages
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            assert (page.parent / target).resolve().is_file(), f"{page.name} -> {target}"
