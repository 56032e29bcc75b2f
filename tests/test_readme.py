"""The README is for the people who use the nodes; the docs pages hold the rest.

Checks (no torch): the README's length and its first lines (the two set-up commands), that
install comes before the list of docs pages and names the registry id and the Windows
portable command, that every relative link in README.md and docs/*.md reaches a file, and
that pyproject.toml carries the Comfy Registry metadata.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 250
SETUP = [
    "    make demo    # main job on the bundled shapes model: one edit of each kind, scored; PNGs in demo_out/",
    "    make test    # the full test suite",
]
WINDOWS_PORTABLE_PIP = r"python_embeded\python.exe -m pip install -r"
IMAGE_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif")  # what the registry takes for Icon

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _code_blocks(lines: list[str]) -> list[list[str]]:
    """Fenced and indented (4 spaces, after a blank line) code blocks, in order."""
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i]
        if FENCE.match(line):
            j = i + 1
            while j < len(lines) and not FENCE.match(lines[j]):
                j += 1
            blocks.append(lines[i + 1:j])
            i = j + 1
        elif line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            block = lines[i:j]
            while block and not block[-1].strip():
                block.pop()
            blocks.append(block)
            i = j
        else:
            i += 1
    return blocks


def _links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link and image outside code."""
    out, in_fence = [], False
    for n, line in enumerate(_lines(path), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        text = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        out += [(n, m.group(1)) for m in LINK.finditer(text)]
    return out


def _section(lines: list[str], heading: str) -> tuple[int, list[str]]:
    starts = [i for i, line in enumerate(lines) if line.startswith("## ") and heading.lower() in line.lower()]
    assert starts, f"README.md has no '## ...{heading}...' section"
    start = starts[0]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, lines[start:end]


def test_readme_is_short():
    n = len(_lines(README))
    assert n <= MAX_LINES, f"README.md has {n} lines; at most {MAX_LINES} (move details to docs/)"


def test_readme_starts_with_the_two_setup_commands():
    lines = _lines(README)
    assert lines[0].startswith("# ")
    assert lines[2:4] == SETUP, "the first lines of README.md must stay the two set-up commands"
    assert _code_blocks(lines)[0] == SETUP, "README.md's first code block must be exactly the two set-up commands"
    assert lines[5].startswith("(Fresh machine"), "the note under the set-up commands must follow them"


def test_install_comes_first_and_names_the_registry_id_and_windows_portable():
    lines = _lines(README)
    start, install = _section(lines, "Install")
    text = "\n".join(install)
    registry_id = _pyproject()["project"]["name"]
    assert registry_id in text, f"the install section must name the registry id {registry_id!r}"
    assert f"comfy node install {registry_id}" in text
    assert "ComfyUI-Manager" in text
    assert WINDOWS_PORTABLE_PIP in text, "the install section must give the Windows portable pip command"
    assert "requirements.txt" in text
    docs_links = [i for i, line in enumerate(lines)
                  if line.lstrip().startswith(("- [", "* [")) and "](docs/" in line]
    assert docs_links, "README.md has no list of links to docs/ pages"
    assert start < docs_links[0], "the install section must come before the docs link list"


def test_readme_keeps_a_picture_and_a_node_table():
    text = README.read_text(encoding="utf-8")
    assert [t for _, t in _links(README) if t.lower().endswith(IMAGE_TYPES)], "README.md shows no picture"
    _, nodes = _section(_lines(README), "Nodes")
    for node_id in re.findall(r'node_id="(DragonDiff_\w+)"', "".join(
            p.read_text(encoding="utf-8") for p in sorted((ROOT / "nodes").glob("*.py")))):
        assert node_id in "\n".join(nodes), f"README.md's node table lacks {node_id}"
    assert "not measured" in text  # the known limit on real Stable Diffusion weights


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_reach_a_file(path):
    broken = []
    for n, target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (http:, mailto:, ...) or an anchor on this page
        file = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not (path.parent / file).exists():
            broken.append(f"{path.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_docs_pages_start_with_what_they_hold():
    for page in sorted((ROOT / "docs").glob("*.md")):
        lines = [line for line in _lines(page) if line.strip()]
        assert lines and lines[0].startswith("# "), f"{page.name}: starts with its title"
        assert len(lines) > 1 and not lines[1].startswith(("#", "|", "```", "    ")), \
            f"{page.name}: a sentence of what it holds follows the title"


def test_registry_metadata_is_complete():
    data = _pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project.get("version", "")), "[project] version: X.Y.Z"
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", project["name"]) and len(project["name"]) < 100
    assert project["urls"]["Repository"].startswith("https://github.com/")
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert isinstance(comfy.get(key), str) and comfy[key].strip(), f"[tool.comfy] {key} is empty"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]


def test_registry_icon_is_an_image_of_this_repository():
    data = _pyproject()
    icon, repo = data["tool"]["comfy"]["Icon"], data["project"]["urls"]["Repository"].rstrip("/")
    assert icon.lower().endswith(IMAGE_TYPES), f"Icon must be {', '.join(IMAGE_TYPES)}: {icon}"
    if icon.startswith("https://"):
        owner_name = repo.removeprefix("https://github.com/")
        m = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_name)}/[^/]+/(.+)", icon)
        assert m, f"Icon {icon} is not a raw URL of the Repository {repo}"
        file = ROOT / unquote(m.group(1))
    else:
        file = ROOT / icon
    assert file.is_file(), f"Icon points at {file.relative_to(ROOT)}, which is not in the repository"
    image = pytest.importorskip("PIL.Image")
    with image.open(file) as im:
        assert max(im.size) <= 400, f"the registry takes icons up to 400x400 px; {file.name} is {im.size}"
