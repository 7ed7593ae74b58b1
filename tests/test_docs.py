"""The documentation that is generated from the code stays equal to it: the README's CLI
synopsis and ``docs/cli.md`` come from the parser. ``python tests/test_docs.py --write``
rewrites both after a change of the parser."""
import re
import sys
from pathlib import Path

from nettrim.cli import command_help, synopsis

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"
# the synopsis lines: every one starts with "nettrim" or with the indentation of a continued usage
BLOCK = re.compile(r"(<!-- cli-synopsis: generated from the parser -->\n```text\n)((?:(?:nettrim| ).*\n)*)(```)")


def cli_doc() -> str:
    parts = ["# Command-line reference", "",
             "The help of every `nettrim` command, as `nettrim COMMAND --help` prints it (generated from the "
             "parser by `python tests/test_docs.py --write`; the tests check that it is current). What the "
             "options mean in the library: the README's *Python API*; the program and the report's columns: "
             "[program.md](program.md).", ""]
    for name, text in command_help().items():
        title = name if name == "nettrim" else f"nettrim {name}"
        parts += [f"## {title}", "", "```text", text, "```", ""]
    return "\n".join(parts)


def readme_with_synopsis(text: str) -> str:
    if not BLOCK.search(text):
        raise AssertionError("README.md: no '<!-- cli-synopsis: generated from the parser -->' block")
    return BLOCK.sub(lambda match: match.group(1) + synopsis() + "\n" + match.group(3), text)


def test_readme_synopsis_is_the_parsers():
    text = README.read_text()
    assert readme_with_synopsis(text) == text, "run: python tests/test_docs.py --write"


def test_cli_reference_is_the_parsers():
    assert CLI_DOC.read_text() == cli_doc(), "run: python tests/test_docs.py --write"


def test_every_option_of_every_command_is_in_the_synopsis():
    import argparse

    from nettrim.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    written = set(re.findall(r"(?<![\w-])(-{1,2}[a-z][a-z-]*)", synopsis()))
    for name, command in [("nettrim", parser), *commands.items()]:
        for action in command._actions:
            if action.option_strings:
                assert written & set(action.option_strings), (name, action.option_strings)


def test_the_docs_do_not_cite_files_outside_the_repository():
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        assert "DESIGN.md" not in path.read_text(), path


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_docs.py --write")
    README.write_text(readme_with_synopsis(README.read_text()))
    CLI_DOC.write_text(cli_doc())
    print(f"wrote {README.name} (CLI synopsis) and {CLI_DOC.relative_to(ROOT)}")
