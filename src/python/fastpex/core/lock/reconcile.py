"""Reconciliation: resolve every target (platform leaders first, followers pinned to their
leader's versions where a file fits), then re-resolve targets that disagree, pinned, until
every project has one version where one version can serve every target. What cannot be
reconciled is reported (`divergences`). A minimal re-lock whose old pins no longer resolve
frees them, the ones pip names first.
"""

from __future__ import annotations

import functools
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from fastpex.core.lock.errors import ResolveError
from fastpex.core.lock.runner import PipRun, ResolveOptions, Runner, TargetReport
from fastpex.core.lock.sources import file_version
from fastpex.core.model import Target
from fastpex.core.util.versions import version_sort_key

__all__ = ["divergences", "first_pass", "reconcile"]


def _error_for(run: PipRun, runner: Runner, constraints: Mapping[str, str]) -> ResolveError:
    hints = []
    for project in run.missing:
        runner.source.check_reachable(project, run.target)
        hint = _no_such_project_hint(runner, project, run.target) or _no_fit_hint(
            runner, project, run.target, run.chain_to(project)
        )
        if hint:
            hints.append(hint)
    pinned = f" (with {len(constraints)} pins from the existing lock or other targets)" if constraints else ""
    return ResolveError(
        f"Could not resolve the requirements for target `{run.target.name}`{pinned}. "
        + (" ".join(hints) + " " if hints else "")
        + f"pip says:\n{run.output}",
        target=run.target.name,
        pip_output=run.output,
    )


def _raise_failures(targets: Sequence[Target], failed: Mapping[str, ResolveError]) -> None:
    """Raise what failed: one target's error as it is, several as one error with a paragraph
    per target (in target order), each with its own pip output."""
    if not failed:
        return
    errors = [failed[t.name] for t in targets if t.name in failed]
    if len(errors) == 1:
        raise errors[0]
    names = ", ".join(f"`{e.target}`" for e in errors)
    paragraphs = []
    for e in errors:
        head, _, rest = str(e).partition("\n")
        paragraphs.append(head + ("\n" + textwrap.indent(rest.strip("\n"), "    ") if rest.strip() else ""))
    raise ResolveError(
        f"Could not resolve the requirements for {len(errors)} of the {len(targets)} targets ({names}); "
        f"each is explained below\n" + "\n\n".join(paragraphs),
        target=errors[0].target,
        pip_output="\n\n".join(e.pip_output for e in errors),
    )


def _no_such_project_hint(runner: Runner, project: str, target: Target) -> str:
    """"versions: none" because no index has the project at all (a 404, an empty page)."""
    try:
        asked = runner.source.sources_without(project, target)
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    if asked is None:
        return ""
    where = ", ".join(f"`{url}`" for url in asked) or "no index"
    return (
        f"No index has a project `{project}`: {where} {'has' if len(asked) == 1 else 'have'} no files of it "
        f"(a 404 or an empty page). Check the spelling of `{project}` and of the requirement that "
        f"pulls it in, or pass the index that has it (`--index`; `--route '{project}=NAME'` to take "
        f"it from one index only)."
    )


def _no_fit_hint(runner: Runner, project: str, target: Target, chain: Sequence[str] = ()) -> str:
    """Why pip saw "versions: none" although the index has the project (tags, Python, sdists),
    and, for a dependency, the chain of requirements that pulled it in."""
    try:
        files = [f for f in runner.source.project_files(project, target) if file_version(f.filename)]
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    if not files:
        return ""
    newest, pre_note = _newest_takeable({file_version(f.filename) or "" for f in files}, runner.options.prereleases)
    latest = [f for f in files if file_version(f.filename) == newest]
    platforms: Set[str] = set()
    for f in latest:
        if f.filename.endswith(".whl"):
            try:
                platforms.update(t.platform for t in parse_wheel_filename(f.filename)[3])
            except (InvalidWheelFilename, InvalidVersion):
                continue
    pulled = f" (required through {' -> '.join(f'`{n}`' for n in chain)})" if len(chain) > 1 else ""
    if not platforms and runner.options.only_binary and any(not f.filename.endswith(".whl") for f in latest):
        return (
            f"`{project}`{pulled} is published only as an sdist: its newest version, {newest}{pre_note}, has no "
            f"wheel, and this lock takes wheels only. Allow sdists to lock it and build it from source "
            f"(`--allow-sdists`; in Pants, `[fastpex].allow_sdists = true`)."
        )
    python = sorted({f.requires_python for f in latest if f.requires_python})
    shown = ", ".join(sorted(platforms)[:8]) + (" ..." if len(platforms) > 8 else "")
    return (
        f"The index has {len(files)} files of `{project}`{pulled} but none fits `{target.name}` "
        f"({target.platform}, Python {target.marker_environment.get('python_full_version', target.python_version)}): "
        f"its newest version, {newest}{pre_note}, has "
        + (f"wheels for {shown}" if platforms else "no wheels")
        + (f" and requires Python {python[0]}" if python else "")
        + ". If the target can run those, widen it (e.g. `@macos14.0`, `@glibc2.34`)"
        + (", or allow sdists (`--allow-sdists`)." if runner.options.only_binary else ".")
    )


def _is_prerelease(version: str) -> bool:
    try:
        return Version(version).is_prerelease
    except InvalidVersion:
        return False


def _newest_takeable(versions: Set[str], prereleases: bool) -> Tuple[str, str]:
    """The newest version pip could have taken, and a note for the hint: without `--pre` pip
    skips pre-releases (and dev releases) unless a project has nothing else, so name the newest
    final release; only when there is none, the newest pre-release, said to be one."""
    finals = {v for v in versions if prereleases or not _is_prerelease(v)}
    if finals:
        return max(finals, key=version_sort_key), ""
    return max(versions, key=version_sort_key), " (a pre-release: the project has no final release)"


def first_pass(
    runner: Runner,
    targets: Sequence[Target],
    base_pins: Mapping[str, Mapping[str, str]],
    notes: List[str],
) -> Dict[str, TargetReport]:
    """Resolve every target, leaders first: per platform, the target with the oldest Python
    resolves freely, and the platform's other targets then resolve with the leader's versions
    as constraints wherever a usable file exists (`_version_possible`). Newer Pythons can
    usually take what older ones chose, and alignment would pin them there anyway; doing it up
    front saves the re-resolves (ml-core on 6 targets: 6 pip runs instead of 9), and a pinned
    pip run resolves faster. A follower whose pinned run fails resolves freely; `_reconcile`
    then aligns what still differs (across platforms, or where a pin could not hold).
    Every target that cannot resolve is reported, together, in target order (a follower of a
    failed leader resolves freely to find out)."""
    failed: Dict[str, ResolveError] = {}
    if not runner.options.reconcile:
        each = _resolve_each(runner, targets, base_pins, notes, failed)
        _raise_failures(targets, failed)
        return each
    leader_of = _platform_leaders(targets)
    leaders = [t for t in targets if leader_of[t.name] is t]
    # One chain per platform: its leader, then at once its followers. A platform's followers
    # wait for their own leader only, not for the slowest platform (Runner.run keeps the
    # number of concurrent pip runs to `max_parallel`).
    with ThreadPoolExecutor(max_workers=max(1, len(leaders)), thread_name_prefix="fastpex-platform") as pool:
        chains = list(pool.map(lambda t: _lead_and_follow(runner, t, targets, leader_of, base_pins), leaders))
    results: Dict[str, TargetReport] = {}
    for chain in chains:  # notes in the order waves wrote them: leaders, then followers in target order
        notes.extend(chain.lead_notes)
        failed.update(chain.failed)
        results.update(chain.results)
    unpinned = [t for t in targets if leader_of[t.name] is not t and leader_of[t.name].name in failed]
    followed = {run.target.name: run for chain in chains for run in chain.follower_runs}
    for target in targets:
        run = followed.get(target.name)
        if run is None:
            continue
        if run.ok and run.report is not None:
            results[target.name] = run.report
            notes.append(f"{target.name}: resolved with the versions {leader_of[target.name].name} chose, where they fit")
        else:
            unpinned.append(target)
    results.update(_resolve_each(runner, unpinned, base_pins, notes, failed))
    _raise_failures(targets, failed)
    return {t.name: results[t.name] for t in targets}


class _Chain(NamedTuple):
    """One platform's part of the first pass."""

    lead_notes: List[str]
    failed: Dict[str, ResolveError]
    results: Dict[str, TargetReport]
    follower_runs: List[PipRun]  # the pinned runs of the followers, in target order


def _lead_and_follow(
    runner: Runner,
    lead: Target,
    targets: Sequence[Target],
    leader_of: Mapping[str, Target],
    base_pins: Mapping[str, Mapping[str, str]],
) -> _Chain:
    """Resolve `lead` freely, then its followers with its versions as constraints wherever a
    usable file exists (`_version_possible`)."""
    notes: List[str] = []
    failed: Dict[str, ResolveError] = {}
    results = _resolve_each(runner, [lead], base_pins, notes, failed)
    if lead.name in failed:
        return _Chain(notes, failed, results, [])
    jobs = []
    for target in targets:
        if target is lead or leader_of[target.name] is not lead:
            continue
        pins = {
            item.name: item.version
            for item in results[lead.name].items
            if _version_possible(runner, item.name, item.version, target)
        }
        pins.update(base_pins[target.name])
        jobs.append((target, pins))
    return _Chain(notes, failed, results, runner.run_many(jobs))


def _platform_leaders(targets: Sequence[Target]) -> Dict[str, Target]:
    """target name -> the target with the oldest Python on its platform (itself, if that)."""
    oldest: Dict[str, Target] = {}
    for target in targets:
        known = oldest.get(target.platform)
        if known is None or _python_key(target) < _python_key(known):
            oldest[target.platform] = target
    return {t.name: oldest[t.platform] for t in targets}


def _python_key(target: Target) -> Tuple[int, ...]:
    return tuple(int(p) for p in target.python_version.split(".") if p.isdigit())


def _resolve_each(
    runner: Runner,
    targets: Sequence[Target],
    base_pins: Mapping[str, Mapping[str, str]],
    notes: List[str],
    failed: Dict[str, ResolveError],
) -> Dict[str, TargetReport]:
    """One pip run per target with its base pins; a minimal re-lock whose old pins no longer
    resolve frees the pins pip names, then all of them. The targets that still fail go into
    `failed` (their error), not into the result."""
    runs = runner.run_many([(t, base_pins[t.name]) for t in targets])
    results: Dict[str, TargetReport] = {}
    retry: List[Tuple[PipRun, Mapping[str, str]]] = []
    for run in runs:
        if run.ok:
            assert run.report is not None
            results[run.target.name] = run.report
        elif base_pins[run.target.name]:
            retry.append((run, base_pins[run.target.name]))
        else:
            failed[run.target.name] = _error_for(run, runner, {})
    # Minimal re-lock fallback: first free the pins pip names in its explanation, then all.
    for run, pins in retry:
        target = run.target
        mentioned = {canonicalize_name(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", run.output)}
        relaxed = {n: v for n, v in pins.items() if n not in mentioned}
        attempts = [relaxed] if relaxed != dict(pins) else []
        attempts.append({})
        for attempt in attempts:
            again = runner.run(target, attempt)
            if again.ok:
                assert again.report is not None
                results[target.name] = again.report
                freed = sorted(set(pins) - set(attempt))
                notes.append(
                    f"{target.name}: the existing pins did not resolve with the new requirements; "
                    f"released {len(freed)} pin(s): {', '.join(freed[:20])}{' ...' if len(freed) > 20 else ''}"
                )
                break
        else:
            failed[target.name] = _error_for(again, runner, {})
    return {t.name: results[t.name] for t in targets if t.name in results}


def divergences(results: Mapping[str, TargetReport]) -> Dict[str, Dict[str, str]]:
    by_project: Dict[str, Dict[str, str]] = {}
    for name, report in results.items():
        for item in report.items:
            by_project.setdefault(item.name, {})[name] = item.version
    return {
        project: dict(sorted(per_target.items()))
        for project, per_target in sorted(by_project.items())
        if len(set(per_target.values())) > 1
    }


def reconcile(
    runner: Runner,
    targets: Sequence[Target],
    results: Dict[str, TargetReport],
    base_pins: Mapping[str, Mapping[str, str]],
    options: ResolveOptions,
    notes: List[str],
) -> Tuple[Dict[str, TargetReport], Dict[str, Dict[str, str]]]:
    """Re-resolve disagreeing targets with a pin until every project has one version, if it can.

    For each divergent project, try its chosen versions from the highest down: pin it in every
    target that chose otherwise; the first version all of them resolve with wins. Agreed pins
    are kept for later rounds so a later re-resolve cannot undo an earlier agreement.
    """
    by_name = {t.name: t for t in targets}
    agreed: Dict[str, Dict[str, str]] = {t.name: {} for t in targets}
    _reconcile_at_once(runner, by_name, results, base_pins, agreed, notes)
    unresolvable: Set[str] = set()
    for _ in range(max(1, options.max_reconcile_rounds)):
        divergent = {p: v for p, v in divergences(results).items() if p not in unresolvable}
        if not divergent:
            break
        progressed = False
        for project, per_target in divergent.items():
            current = divergences(results).get(project)
            if not current:
                continue  # an earlier agreement in this round fixed it
            for version in sorted(set(current.values()), key=version_sort_key, reverse=True):
                movers = [by_name[n] for n, v in current.items() if v != version]
                if not all(_version_possible(runner, project, version, t) for t in movers):
                    continue  # some target has no usable file of it: don't ask pip
                jobs = []
                for target in movers:
                    pins = dict(base_pins[target.name])
                    pins.update(agreed[target.name])
                    pins[project] = version
                    jobs.append((target, pins))
                runs = runner.run_many(jobs)
                if all(r.ok and r.report is not None and r.report.versions().get(project) == version for r in runs):
                    for r in runs:
                        assert r.report is not None
                        results[r.target.name] = r.report
                    for name in current:
                        agreed[name][project] = version
                    notes.append(
                        f"{project}: all targets use {version} (re-resolved {', '.join(t.name for t in movers)})"
                    )
                    progressed = True
                    break
            else:
                unresolvable.add(project)
        if not progressed:
            break
    remaining = divergences(results)
    for project, per_target in remaining.items():
        pairs = ", ".join(f"{t}: {v}" for t, v in per_target.items())
        notes.append(f"{project}: versions differ across targets because no single version resolves for all ({pairs})")
    return results, remaining


def _reconcile_at_once(
    runner: Runner,
    by_name: Mapping[str, Target],
    results: Dict[str, TargetReport],
    base_pins: Mapping[str, Mapping[str, str]],
    agreed: Dict[str, Dict[str, str]],
    notes: List[str],
) -> None:
    """One combined round before the project-by-project one: pick, for every divergent
    project, the highest chosen version that has a usable file for every target, and re-resolve
    each disagreeing target once with all those pins. Divergences usually share one cause (an
    older Python that newer releases dropped), so this typically settles every project with one
    pip run per mover instead of one per (project, mover). A target whose run fails or moves
    some other project is left as it was; the project-by-project round takes over from there.
    """
    divergent = divergences(results)
    if len(divergent) < 2:
        return  # nothing to batch: the per-project round costs the same
    chosen: Dict[str, str] = {}
    for project, per_target in divergent.items():
        for version in sorted(set(per_target.values()), key=version_sort_key, reverse=True):
            movers = [by_name[n] for n, v in per_target.items() if v != version]
            if all(_version_possible(runner, project, version, t) for t in movers):
                chosen[project] = version
                break
    if len(chosen) < 2:
        return
    pins_by_target: Dict[str, Dict[str, str]] = {}
    for project, version in chosen.items():
        for name, v in divergent[project].items():
            if v != version:
                pins_by_target.setdefault(name, {})[project] = version
    jobs = []
    for name in sorted(pins_by_target):
        pins = dict(base_pins[name])
        pins.update(pins_by_target[name])
        jobs.append((by_name[name], pins))
    accepted: Dict[str, TargetReport] = {}
    for run in runner.run_many(jobs):
        if not run.ok or run.report is None:
            continue
        versions = run.report.versions()
        if all(versions.get(p) == v for p, v in pins_by_target[run.target.name].items()):
            accepted[run.target.name] = run.report
    settled = []
    for project, version in sorted(chosen.items()):
        mover_names = sorted(n for n, v in divergent[project].items() if v != version)
        if all(n in accepted for n in mover_names):
            settled.append((project, version, mover_names))
    if not settled:
        return
    results.update(accepted)
    for project, version, names in settled:
        for name in divergent[project]:
            agreed[name][project] = version
        notes.append(f"{project}: all targets use {version} (re-resolved {', '.join(names)})")


def _version_possible(runner: Runner, project: str, version: str, target: Target) -> bool:
    """False when no file of project==version can serve `target` (tags, Requires-Python)."""
    try:
        files = list(runner.source.files_of_version(project, version, target))
    except Exception:  # noqa: BLE001 - a prefilter only; pip has the last word
        return True
    if not files:
        return True
    tags = _supported_tags(target)
    python = str(Version(target.marker_environment.get("python_full_version") or target.python_version))
    for f in files:
        if f.yanked:
            continue
        if f.requires_python and not _admits(f.requires_python, python):
            continue
        if f.filename.endswith(".whl"):
            wheel_tags = _wheel_tags(f.filename)
            if wheel_tags is None:
                return True
            if not wheel_tags.isdisjoint(tags):
                return True
        elif not runner.options.only_binary:
            return True
    return False


# Asked for every (project, version, target) the leaders chose: each answer is memoized, as
# building a target's tag set (thousands of tags) and parsing specifiers per call cost more.
_tag_sets: Dict[str, Tuple[object, "frozenset[str]"]] = {}


def _supported_tags(target: Target) -> "frozenset[str]":
    known = _tag_sets.get(target.name)
    if known is None or known[0] is not target.supported_tags:
        known = _tag_sets[target.name] = (target.supported_tags, frozenset(target.supported_tags))
    return known[1]


@functools.lru_cache(maxsize=1 << 12)
def _admits(requires_python: str, python: str) -> bool:
    try:
        return SpecifierSet(requires_python).contains(Version(python), prereleases=True)
    except InvalidSpecifier:
        return True


@functools.lru_cache(maxsize=1 << 14)
def _wheel_tags(filename: str) -> "Optional[frozenset[str]]":
    try:
        return frozenset(str(t) for t in parse_wheel_filename(filename)[3])
    except (InvalidWheelFilename, InvalidVersion):
        return None
