"""Several FileStore trees into one database: what each tree's experiments and registered models
become there, decided from the trees before anything is loaded.

MLflow's schema keys experiments by id and by name, registered models and prompts by name, and
runs, traces and logged models by ids it takes to be unique everywhere. Trees made apart share
all of those: every tree has experiment 0 "Default", MLflow 1.x numbered experiments 1, 2, 3 in
every tree, people reuse experiment and model names, and a folder copied from one tree into
another brings its runs twice. Per source, in the order the sources are given:

- Experiment ids. The first source to hold an id keeps it (if the target can hold it); a later
  source's experiment with that id gets a new one, through the renumbering a PostgreSQL target
  already uses for ids it cannot hold (``renumber``: above the largest kept id, by creation time,
  then old id, then source).
- Experiment names (``--on-name-clash``). An empty ``Default`` (no runs, traces, models,
  datasets or tags) holds nothing another tree's does not: one is kept, the others join it.
  Any other name in several sources: ``rename`` gives the later ones ``name (label)``, the label
  from the source's folder; ``merge`` puts them into the first one, which keeps its fields and
  its tags, and takes the others' tags it lacks; ``fail`` refuses them, each one named.
- Registered models and prompts: the same three choices. A merged model's versions are numbered
  after the first one's (so version 1 of a later tree may become version 4), and keep their run
  ids and sources; a renamed prompt gets ``name.label`` (a prompt's name allows no spaces).
- Run, trace and logged model ids in several sources: byte-identical folders (a copy) are
  migrated once, from the first source; copies whose files differ are invalid input, named.

The work units carry each decision (``etl.source.layout.ExperimentTarget``, ``ModelTarget``), so
the workers that parse them write the target's values; the report lists every id and name that
changed, per source. The same sources in the same order always give the same plan.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from etl.config import RULES
from etl.ids import LINKED_EXPERIMENTS_TAG, linked_ids
from etl.rows import Problem
from etl.source.extract import own_dataset_id
from etl.source.layout import (
    META,
    ExperimentTarget,
    LayoutError,
    ModelTarget,
    experiment_dirs,
    is_number,
    registered_model_dirs,
    run_dirs,
    subdirs,
)
from etl.source.read import SourceError, SourceErrors, read_key_folder, read_text, read_yaml
from etl.sql_limits import INT64

DEFAULT_EXPERIMENT = "Default"
PROMPT_TAG = "mlflow.prompt.is_prompt"
# A prompt's name (mlflow.prompt.constants.PROMPT_NAME_RULE) allows only these.
_PROMPT_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
# Ids MLflow expects to be unique across a database: kind -> the folder of an experiment that
# holds them (runs sit in the experiment folder itself).
TREE_WIDE = {"runs": None, "traces": "traces", "logged_models": "models"}


@dataclass
class SourcePlan:
    """What one source's experiments and registered models become in the target."""

    mlruns: Path
    label: str  # names the source in renamed names, from its folder (``proj-b`` of proj-b/mlruns)
    experiments: dict[int, ExperimentTarget] = field(default_factory=dict)  # folder id -> target
    models: dict[str, ModelTarget] = field(default_factory=dict)  # registered model folder -> target
    # kind -> {id: (its folder, the folder of the same id in an earlier source, migrated instead)}
    copies: dict[str, dict[str, tuple[str, str]]] = field(default_factory=lambda: {k: {} for k in TREE_WIDE})
    problems: list[Problem] = field(default_factory=list)

    @property
    def id_map(self) -> dict[int, int]:
        """Folder id -> target id, for every experiment whose id changes."""
        return {old: t.id for old, t in self.experiments.items() if t.id != old}


@dataclass
class MergePlan:
    sources: list[SourcePlan]
    rule: str = RULES[0]
    # kind -> ids held by several sources with different files: no copy is migrated.
    conflicts: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in TREE_WIDE})
    # What --on-name-clash merge (and an empty Default kept once) did, for the report.
    merges: list[dict] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.sources for p in s.problems]


def single(mlruns: Path, max_id: int) -> MergePlan:
    """The plan of one source: only the ids the target cannot hold change, and only those
    experiments' meta.yaml files are read."""
    paths: dict[int, str] = {}
    for path, _ in experiment_dirs(mlruns):
        paths.setdefault(int(os.path.basename(path)), path)
    new = renumber([(old, old) for old in sorted(paths)], max_id, lambda old: _created(paths[old]))
    return MergePlan([SourcePlan(mlruns, label(mlruns), {old: ExperimentTarget(n) for old, n in new.items()})])


def experiment_id_map(mlruns: Path, max_id: int) -> dict[int, int]:
    """Old -> new id of each experiment of one tree whose id the target cannot hold."""
    return single(mlruns, max_id).sources[0].id_map


def _created(path: str) -> int | None:
    """An experiment's creation time; None if its meta.yaml does not say (the load reports a
    meta.yaml that does not read)."""
    try:
        created = read_yaml(os.path.join(path, META)).get("creation_time")
    except SourceError:
        return None
    return created if isinstance(created, int) and not isinstance(created, bool) else None


def renumber(ids: list[tuple[object, int]], max_id: int, created) -> dict[object, int]:
    """New ids for the experiments that cannot keep their own: {key: new id}.

    ``ids``: (key, old id) in order of precedence. An experiment keeps its id if the target can
    hold it and no earlier one kept it. The others get new ids above the largest kept one, in
    order of creation time (``created(key)``, None last), then old id, then precedence, so the
    same input always maps the same way. An id beyond 64 bits is no id FileStore writes: it is
    left as it is, and the load reports it as invalid input.
    """
    kept: set[int] = set()
    moved = []
    for order, (key, old) in enumerate(ids):
        if old > INT64[1]:
            continue
        if old <= max_id and old not in kept:
            kept.add(old)
            continue
        when = created(key)
        moved.append((when is None, when or 0, old, order, key))
    start = max(kept, default=-1) + 1
    new = {item[-1]: start + n for n, item in enumerate(sorted(moved, key=lambda m: m[:4]))}
    if new and max(new.values()) > max_id:
        raise LayoutError(
            f"{len(new)} experiment ids do not fit the target and there is no room above "
            f"the largest one that does ({max(kept)})"
        )
    return new


def label(mlruns: Path) -> str:
    """A source's name in renamed names: the folder holding ``mlruns/`` (``proj-b`` for
    ``~/proj-b/mlruns``), or the tree's own folder when it is not called mlruns."""
    return (mlruns.parent.name if mlruns.name == "mlruns" else mlruns.name) or str(mlruns)


def labels(sources: list[Path]) -> list[str]:
    """Each source's label; a label two sources share gets its position (``proj-2``)."""
    names = [label(s) for s in sources]
    return [n if names.count(n) == 1 else f"{n}-{i + 1}" for i, n in enumerate(names)]


# --- experiments ------------------------------------------------------------------------------


@dataclass
class _Experiment:
    source: int
    old: int
    path: str
    name: str | None  # None: meta.yaml unreadable (the load reports it)
    created: int | None
    empty: bool

    @property
    def key(self) -> tuple[int, int]:
        return self.source, self.old

    @property
    def meta(self) -> str:
        return os.path.join(self.path, META)


def _read_experiments(index: int, mlruns: Path) -> list[_Experiment]:
    """The source's experiments, once per id (the load reports an id held twice)."""
    out, seen = [], set()
    for path, _deleted in experiment_dirs(mlruns):
        old = int(os.path.basename(path))
        if old in seen:
            continue
        seen.add(old)
        try:
            meta = read_yaml(os.path.join(path, META))
        except SourceError:
            meta = {}
        name = None if meta.get("name") in (None, "") else str(meta["name"])
        created = meta.get("creation_time")
        out.append(_Experiment(index, old, path, name,
                               created if isinstance(created, int) and not isinstance(created, bool) else None,
                               name == DEFAULT_EXPERIMENT and _holds_nothing(path)))
    return out


def _holds_nothing(path: str) -> bool:
    """No runs, traces, logged models, datasets or tags in an experiment folder."""
    return not (run_dirs(path) or subdirs(os.path.join(path, "traces")) or subdirs(os.path.join(path, "models"))
                or subdirs(os.path.join(path, "datasets")) or _listing(os.path.join(path, "tags")))


def _listing(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def plan(sources: list[Path], max_id: int, rule: str = RULES[0]) -> MergePlan:
    """What each source becomes in one database (``sources``: resolved mlruns folders, in the
    order given; ``max_id``: the largest experiment id the target holds)."""
    if len(sources) == 1:
        return single(sources[0], max_id)
    result = MergePlan([SourcePlan(s, n) for s, n in zip(sources, labels(sources))], rule)
    experiments = [e for i, s in enumerate(sources) for e in _read_experiments(i, s)]
    _plan_experiments(result, experiments, max_id)
    _plan_models(result)
    _plan_copies(result)
    return result


def _plan_experiments(result: MergePlan, experiments: list[_Experiment], max_id: int) -> None:
    by_name: dict[str, list[_Experiment]] = {}
    for e in experiments:
        if e.name is not None:
            by_name.setdefault(e.name, []).append(e)
    taken = set(by_name)
    joins: dict[tuple[int, int], _Experiment] = {}  # key -> the experiment it joins
    names: dict[tuple[int, int], str] = {}  # key -> new name
    left_out: set[tuple[int, int]] = set()
    for name, members in by_name.items():
        sources = {m.source for m in members}
        if len(sources) == 1:
            continue  # one tree's own business: the load reports a name it holds twice
        twice = [m for m in members if sum(1 for o in members if o.source == m.source) > 1]
        for m in twice:
            other = next(o for o in members if o.source == m.source and o is not m)
            result.sources[m.source].problems.append(Problem(
                m.meta, f"experiment name {name!r} is also the name of {other.meta}; the target holds "
                "each name once", None, "experiments", str(m.old)))
            left_out.add(m.key)
        members = [m for m in members if m not in twice]
        if name == DEFAULT_EXPERIMENT and members:
            # An empty Default holds nothing another does not: one Default is kept, the empty
            # ones join it. The one kept is the first that holds something, else the first.
            head = next((m for m in members if not m.empty), members[0])
            for m in members:
                if m is not head and m.empty:
                    joins[m.key] = head
            members = [m for m in members if m is head or not m.empty]
        if len(members) < 2:
            continue
        head, rest = members[0], members[1:]
        if result.rule == "fail":
            for m in members:
                others = ", ".join(o.meta for o in members if o is not m)
                result.sources[m.source].problems.append(Problem(
                    m.meta, f"experiment name {name!r} is also the name of {others} (--on-name-clash "
                    "fail)", None, "experiments", str(m.old)))
                left_out.add(m.key)
        elif result.rule == "merge":
            for m in rest:
                joins[m.key] = head
        else:
            for m in rest:
                names[m.key] = _free_name(name, result.sources[m.source].label, taken)
    # Ids: experiments that get a row of their own want to keep theirs; those left out get new
    # ones after them (no row: their runs must not land in another's experiment); those that
    # join another take its id.
    own = [e for e in experiments if e.key not in joins and e.key not in left_out]
    created = {e.key: e.created for e in experiments}
    new = renumber([(e.key, e.old) for e in own], max_id, created.get)
    ids = {e.key: new.get(e.key, e.old) for e in own}
    start = max([i for i in ids.values() if i <= max_id] + [-1]) + 1
    for n, e in enumerate(e for e in experiments if e.key in left_out):
        ids[e.key] = start + n
    if ids and max(ids.values()) > max_id:
        raise LayoutError(f"the sources hold more experiments than the target's ids can number ({max_id})")
    for e in experiments:
        if e.key in joins:
            ids[e.key] = ids[joins[e.key].key]
    merged = _plan_joins(result, experiments, joins, ids)
    for e in experiments:
        source = result.sources[e.source]
        source.experiments[e.old] = ExperimentTarget(
            ids[e.key], name=names.get(e.key), joins=e.key in joins, left_out=e.key in left_out,
            namespace=_namespace(e.source), **merged.get(e.key, {}))


def _namespace(index: int) -> str:
    """The first source's datasets keep the ids a migration of it alone gives them."""
    return "" if index == 0 else f"source {index}"


def _plan_joins(result: MergePlan, experiments, joins, ids) -> dict[tuple[int, int], dict]:
    """For each experiment that joins another: the tags and datasets that one holds already, and
    what the report says about it. (An empty Default holds neither.)"""
    groups: dict[tuple[int, int], list[_Experiment]] = {}
    by_key = {e.key: e for e in experiments}
    for key, head in joins.items():
        groups.setdefault(head.key, [head]).append(by_key[key])
    out: dict[tuple[int, int], dict] = {}
    for head_key, members in sorted(groups.items(), key=lambda kv: kv[0]):
        members.sort(key=lambda m: m.key)
        members.insert(0, members.pop(members.index(by_key[head_key])))
        head = members[0]
        tags: dict[str, tuple[str, _Experiment]] = {}
        datasets: dict[tuple[str, str], tuple[dict, str, str]] = {}  # (name, digest) -> (meta, id, path)
        not_taken, joined = [], []
        for m in members:
            own_tags = _tags(os.path.join(m.path, "tags"))
            skip_tags = frozenset(k for k in own_tags if k in tags)
            for key in sorted(skip_tags):
                if own_tags[key] != tags[key][0]:
                    not_taken.append({"source": str(result.sources[m.source].mlruns), "experiment_id": str(m.old),
                                      "key": key, "value": own_tags[key], "kept": tags[key][0]})
            for key, value in own_tags.items():
                tags.setdefault(key, (value, m))
            same = []
            target = result.sources[m.source]
            for folder in subdirs(os.path.join(m.path, "datasets")):
                meta_path = os.path.join(m.path, "datasets", folder, META)
                try:
                    meta = read_yaml(meta_path)
                except SourceError:
                    continue  # the load reports it
                key = (str(meta.get("name")), str(meta.get("digest")))
                if key not in datasets:
                    datasets[key] = (meta, own_dataset_id(_namespace(m.source), str(m.old), folder), meta_path)
                    continue
                # The target holds one dataset per (name, digest) in an experiment: the first
                # one's, which the runs of every merged experiment then use.
                same.append((folder, datasets[key][1]))
                if _dataset_fields(meta) != _dataset_fields(datasets[key][0]):
                    not_taken.append({"source": str(target.mlruns), "experiment_id": str(m.old),
                                      "dataset": meta_path, "kept": datasets[key][2]})
            if m is not head:
                joined.append({"source": str(target.mlruns), "experiment_id": str(m.old), "empty": m.empty})
                out[m.key] = {"skip_tags": skip_tags, "same_datasets": tuple(same)}
        result.merges.append({
            "kind": "experiment", "name": head.name, "experiment_id": str(ids[head.key]),
            "fields_from": {"source": str(result.sources[head.source].mlruns), "experiment_id": str(head.old)},
            "joined": joined, "not_taken": not_taken,
        })
    return out


def _dataset_fields(meta: dict) -> tuple:
    return tuple(meta.get(k) for k in ("source_type", "source", "schema", "profile"))


def _tags(folder: str) -> dict[str, str]:
    try:
        return read_key_folder(folder)
    except (SourceError, SourceErrors):
        return {}  # the load reports the bad file


def _free_name(name: str, source_label: str, taken: set[str], prompt: bool = False) -> str:
    """``name (label)`` (a prompt: ``name.label``, its name allows no spaces), made unique among
    ``taken`` (then taken too) by a number after the label."""
    def renamed(suffix: str) -> str:
        return f"{name}.{suffix}" if prompt else f"{name} ({suffix})"

    candidate, n = renamed(source_label), 2
    while candidate in taken:
        candidate, n = renamed(f"{source_label}-{n}" if prompt else f"{source_label} {n}"), n + 1
    taken.add(candidate)
    return candidate


# --- registered models and prompts --------------------------------------------------------------


@dataclass
class _Model:
    source: int
    name: str
    path: str
    prompt: bool
    versions: list[int]


def _read_models(index: int, mlruns: Path) -> list[_Model]:
    out = []
    for path in registered_model_dirs(mlruns):
        try:
            prompt = read_text(os.path.join(path, "tags", PROMPT_TAG)).strip().lower() == "true"
        except SourceError:
            prompt = False
        versions = sorted(int(v[len("version-"):]) for v in subdirs(path)
                          if v.startswith("version-") and is_number(v[len("version-"):]))
        out.append(_Model(index, os.path.basename(path), path, prompt, versions))
    return out


def _plan_models(result: MergePlan) -> None:
    models = [m for i, s in enumerate(result.sources) for m in _read_models(i, s.mlruns)]
    by_name: dict[str, list[_Model]] = {}
    for m in models:
        by_name.setdefault(m.name, []).append(m)
    taken = set(by_name)
    for name, members in by_name.items():
        head = members[0]
        result.sources[head.source].models[name] = ModelTarget(name)
        if len(members) < 2:
            continue
        if result.rule == "fail":
            for m in members:
                others = ", ".join(o.path for o in members if o is not m)
                result.sources[m.source].problems.append(Problem(
                    os.path.join(m.path, META), f"registered model name {name!r} is also the name of {others} "
                    "(--on-name-clash fail)", None, "registered_models", name))
                result.sources[m.source].models[name] = ModelTarget(name, left_out=True)
        elif result.rule == "merge":
            _merge_models(result, name, members)
        else:
            for m in members[1:]:
                source_label = result.sources[m.source].label
                if m.prompt:
                    new = _free_name(name, _PROMPT_UNSAFE.sub("-", source_label), taken, prompt=True)
                else:  # a model's name allows no ':' (nor '/', which no folder name holds)
                    new = _free_name(name, source_label.replace(":", "-"), taken)
                result.sources[m.source].models[name] = ModelTarget(new)


def _merge_models(result: MergePlan, name: str, members: list[_Model]) -> None:
    head = members[0]
    kind = "prompt" if head.prompt else "registered model"
    tags = _tags(os.path.join(head.path, "tags"))
    aliases = _aliases(head.path)
    top = max(head.versions, default=0)
    joined, not_taken = [], []
    # The prompt whose linked-experiments tag is written, and the target ids of the experiments
    # the later ones are linked to: one merged prompt is linked to all of them.
    holder, linked = (head if LINKED_EXPERIMENTS_TAG in tags else None), []
    for m in members[1:]:
        source = result.sources[m.source]
        if m.prompt != head.prompt:
            source.problems.append(Problem(
                os.path.join(m.path, META), f"{'prompt' if m.prompt else 'registered model'} {name!r} cannot be "
                f"merged into the {kind} of the same name, {head.path} (--on-name-clash merge)", None,
                "registered_models", name))
            source.models[name] = ModelTarget(name, left_out=True)
            continue
        own_tags, own_aliases = _tags(os.path.join(m.path, "tags")), _aliases(m.path)
        if LINKED_EXPERIMENTS_TAG in own_tags:
            if holder is None:
                holder = m
            else:
                linked += [str(source.experiments[int(i)].id) if i.isdigit() and int(i) in source.experiments else i
                           for i in linked_ids(own_tags[LINKED_EXPERIMENTS_TAG])]
        for key in sorted(own_tags.keys() & tags.keys() - {LINKED_EXPERIMENTS_TAG}):
            if own_tags[key] != tags[key]:
                not_taken.append({"source": str(source.mlruns), "key": key, "value": own_tags[key], "kept": tags[key]})
        for alias in sorted(own_aliases.keys() & aliases.keys()):
            not_taken.append({"source": str(source.mlruns), "alias": alias,
                              "version": own_aliases[alias] + top, "kept": aliases[alias]})
        source.models[name] = ModelTarget(name, joins=True, version_offset=top,
                                          skip_tags=frozenset(own_tags.keys() & tags.keys()),
                                          skip_aliases=frozenset(own_aliases.keys() & aliases.keys()))
        joined.append({"source": str(source.mlruns), "versions": {str(v): str(v + top) for v in m.versions}})
        for key, value in own_tags.items():
            tags.setdefault(key, value)
        for alias, version in own_aliases.items():
            aliases.setdefault(alias, version + top)
        top += max(m.versions, default=0)
    if linked:
        models = result.sources[holder.source].models
        models[name] = replace(models[name], linked_experiments=tuple(linked))
    result.merges.append({"kind": kind, "name": name,
                          "fields_from": {"source": str(result.sources[head.source].mlruns)},
                          "joined": joined, "not_taken": not_taken})


def _aliases(path: str) -> dict[str, int]:
    """alias -> version number of a registered model folder (what does not read, the load reports)."""
    out = {}
    for alias in _listing(os.path.join(path, "aliases")):
        try:
            text = read_text(os.path.join(path, "aliases", alias)).strip()
        except SourceError:
            continue
        if is_number(text):
            out[alias] = int(text)
    return out


# --- ids every source may hold: runs, traces, logged models ------------------------------------


def _plan_copies(result: MergePlan) -> None:
    """An id in several sources: a byte-identical folder is a copy, migrated once (from the first
    source); otherwise it is invalid input in every source that holds it."""
    for kind, folder in TREE_WIDE.items():
        first: dict[str, tuple[int, str]] = {}
        later: dict[str, list[tuple[int, str]]] = {}
        for index, source in enumerate(result.sources):
            for path, _ in experiment_dirs(source.mlruns):
                names = run_dirs(path) if folder is None else subdirs(os.path.join(path, folder))
                parent = path if folder is None else os.path.join(path, folder)
                for name in names:
                    where = (index, os.path.join(parent, name))
                    if name not in first:
                        first[name] = where
                    elif first[name][0] != index:
                        later.setdefault(name, []).append(where)
        for entity_id, copies in sorted(later.items()):
            origin = first[entity_id][1]
            differ = [(i, p) for i, p in copies if not same_files(origin, p)]
            if not differ:
                for index, path in copies:
                    result.sources[index].copies[kind][entity_id] = (path, origin)
                continue
            result.conflicts[kind].add(entity_id)
            held = [first[entity_id], *copies]
            for index, path in held:
                others = ", ".join(p for _, p in held if p != path)
                result.sources[index].problems.append(Problem(
                    path, f"the same id is also {others}, with other files; the target holds each id once",
                    None, kind, entity_id))


def same_files(a: str, b: str) -> bool:
    """Whether two entity folders hold the same FileStore data: the same files (and folders) with
    the same bytes, their ``artifacts/`` aside (artifacts stay where they are: a run's
    ``artifact_uri`` is in its meta.yaml, compared here)."""
    try:
        return _listing_of(a) == _listing_of(b) and all(
            _bytes(os.path.join(a, rel)) == _bytes(os.path.join(b, rel))
            for rel, is_dir in _listing_of(a) if not is_dir)
    except OSError:
        return False


def _listing_of(root: str) -> list[tuple[str, bool]]:
    out = []
    for folder, dirs, files in os.walk(root, onerror=_raise):
        rel = os.path.relpath(folder, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d != "artifacts"]
        out += [(os.path.normpath(os.path.join(rel, d)), True) for d in dirs]
        out += [(os.path.normpath(os.path.join(rel, f)), False) for f in files]
    return sorted(out)


def _raise(error: OSError) -> None:
    raise error


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()



# --- artifact locations ---------------------------------------------------------------------------

_WINDOWS_PATH = re.compile(r"^/?[A-Za-z]:[/\\]")


def artifact_problem(uri: str | None, mlruns: Path, exists) -> str | None:
    """Why an experiment's artifact_location or a run's artifact_uri may not find its artifacts
    once several trees are served from one database (None: no reason). Locations are migrated
    as they are: a relative one is resolved against the working folder of whatever reads it, and
    all the trees' relative locations look alike; a local one outside the tree that points
    nowhere was written before the tree moved. ``exists``: os.path.exists, or a cached one."""
    if not uri:
        return None
    if "://" in uri or uri.startswith("file:"):
        parsed = urlparse(uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            return None  # remote storage: not ours to judge
        path = unquote(parsed.path)
    else:
        path = uri
    if _WINDOWS_PATH.match(path):
        return None  # another OS's path (tests/integration/test_windows_trees.py): kept as it is
    if not os.path.isabs(path):
        return f"artifact location {uri!r} is relative: whatever reads the database resolves it against its own working folder"
    inside = os.path.commonpath([os.path.abspath(path), str(mlruns)]) == str(mlruns)
    if inside or exists(path):
        return None
    return f"artifact location {uri!r} points outside the tree, to a folder that does not exist (the tree moved?)"
