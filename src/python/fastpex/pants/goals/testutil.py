"""What the goal tests (package_test, image_test, publish_test, lockfiles_test) share: the stand-in
for the tool process, the `RuleRunner` of the build goals and its options, and the helpers that
read what the stand-in recorded. One copy, so a change to the tool process or to the options every
goal needs is made once.

Test support only: the `testutil` target in this directory's BUILD, depended on by the tests.
"""

from __future__ import annotations

from textwrap import dedent
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from pants.backend.python import target_types_rules
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import EntryPoint, ResolvedPexEntryPoint
from pants.backend.python.util_rules import python_sources
from pants.core.target_types import rules as core_target_types_rules
from pants.engine.fs import EMPTY_DIGEST, Digest, DigestContents
from pants.engine.process import Process
from pants.engine.rules import rule
from pants.testutil.rule_runner import QueryRule, RuleRunner

from fastpex.pants.goals import package
from fastpex.pants.goals.package import LOCK_DIR
from fastpex.pants.subsystems.fastpex import FastpexSubsystem
from fastpex.pants.util_rules.tool import FastpexProcess

LOCKFILE = "3rdparty/examples.lock"
LOCK = f"{LOCK_DIR}/{LOCKFILE}"
LOCK_ONLY = Digest("1" * 64, 1)
LOCK_AND_SOURCES = Digest("2" * 64, 2)
Expected = Union[str, bool, None, List[str]]

# Stands in for the tool PEX: writes its argv and the files it was given to its output, so the
# test sees exactly what the real process would have been asked to do. An output directory
# (packed and split layouts, images) gets one file per `--part` (`all` without one); an output
# file (zipapp) is the record itself.
RECORD_ARGV = dedent(
    """\
    out=""; part=all; prev=""
    for a in "$@"; do
      [ "$prev" = --output ] && out="$a"
      [ "$prev" = --part ] && part="$a"
      prev="$a"
    done
    inputs=$(find . -type f | sort)
    if [ -n "$RECORD_INTO_DIR" ]; then mkdir -p "$out"; f="$out/$part"; else mkdir -p "$(dirname "$out")"; f="$out"; fi
    { printf '%s\\n' "$@"; echo ---; echo "$inputs"; } > "$f"
    """
)


def recording_process(script: str, request: FastpexProcess, **env: str) -> Process:
    """The process `request` would run, with `/bin/sh -c script` in place of the tool PEX."""
    return Process(
        argv=("/bin/sh", "-c", script, "fastpex", *request.argv),
        description=request.description,
        input_digest=request.input_digest or EMPTY_DIGEST,
        output_files=request.output_files,
        output_directories=request.output_directories,
        env={"PATH": "/usr/bin:/bin", **dict(request.extra_env), **env},
    )


@rule
async def record_fastpex_argv(request: FastpexProcess) -> Process:
    into_dir = {"RECORD_INTO_DIR": "1"} if request.output_directories else {}
    return recording_process(RECORD_ARGV, request, **into_dir)


def goal_rule_runner(rules: Iterable, target_types: Iterable, files: Mapping[str, str]) -> RuleRunner:
    """A `RuleRunner` with `rules`, `target_types` and `files`, that answers `[fastpex]` and the
    contents of a digest (what every goal test reads)."""
    runner = RuleRunner(
        rules=[*rules, QueryRule(FastpexSubsystem, []), QueryRule(DigestContents, [Digest])],
        target_types=list(target_types),
    )
    runner.write_files(dict(files))
    return runner


def build_rule_runner(rules: Iterable, target_types: Iterable, files: Mapping[str, str]) -> RuleRunner:
    """`goal_rule_runner` with `fastpex_binary` packaging (the tool process recorded, see
    `record_fastpex_argv`), python sources, `[python]` and an empty LOCKFILE."""
    build_rules = [
        *rules,
        *package.rules(),
        *target_types_rules.rules(),
        *python_sources.rules(),
        *core_target_types_rules(),
        record_fastpex_argv,
        QueryRule(PythonSetup, []),
    ]
    return goal_rule_runner(build_rules, target_types, {LOCKFILE: "{}", **files})


def configure(
    rule_runner: RuleRunner, *options: str, resolves: Optional[Mapping[str, str]] = None
) -> Tuple[FastpexSubsystem, PythonSetup]:
    """Set the options the build goals need (`examples`, a fastpex resolve locked in LOCKFILE,
    unless `resolves` says otherwise) plus `options`; the two subsystems as they then are."""
    all_resolves = dict(resolves) if resolves is not None else {"examples": LOCKFILE}
    rule_runner.set_options(
        [
            "--source-root-patterns=['src']",
            "--python-enable-resolves",
            f"--python-resolves={all_resolves!r}",
            "--python-interpreter-constraints=['CPython==3.11.*']",
            "--fastpex-resolves=['examples']",
            # Dependencies are explicit here; inference would parse with a downloaded pex.
            "--no-python-infer-imports",
            "--python-infer-use-rust-parser",
            *options,
        ]
    )
    return rule_runner.request(FastpexSubsystem, []), rule_runner.request(PythonSetup, [])


def digest_texts(rule_runner: RuleRunner, digest: Digest) -> Dict[str, str]:
    """Every file of `digest`, path to text."""
    return {fc.path: fc.content.decode() for fc in rule_runner.request(DigestContents, [digest])}


def recorded(text: str) -> Tuple[List[str], List[str]]:
    """The argv and the input files a `RECORD_ARGV` record holds."""
    argv, _, inputs = text.partition("---\n")
    return argv.splitlines(), [line[2:] for line in inputs.splitlines() if line]


def entry(spec: str) -> ResolvedPexEntryPoint:
    return ResolvedPexEntryPoint(EntryPoint.parse(spec), file_name_used=False)


def expect_args(argv: Tuple[str, ...], expected: Mapping[str, Expected]) -> None:
    """`flag: value` (its values, for a repeated flag), `flag: True/False` (present or absent),
    `flag: None` (absent)."""
    for flag, value in expected.items():
        values = [argv[i + 1] for i, arg in enumerate(argv) if arg == flag and i + 1 < len(argv)]
        if value is True:
            assert flag in argv, (flag, argv)
        elif value is False or value is None:
            assert flag not in argv, (flag, argv)
        elif isinstance(value, list):
            assert values == value, (flag, argv)
        else:
            assert values == [value], (flag, argv)
