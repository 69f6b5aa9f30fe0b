"""Train runs as Ray tasks, on a cluster whose nodes all see the cache, or on a local Ray instance.

With an address (--ft-ray-address / $RAY_ADDRESS), the uncached runs of one look go out together as
Ray tasks. Each asks for what it needs: one GPU per process where it trains on CUDA (CPUs otherwise),
and the host memory the planner estimates, so Ray never places more runs on a node than fit. The node
that trains writes the record and checkpoints into the shared cache (under the run's lock, so two
sessions train an experiment once); this process reads them from there (trainer.runs.cluster_task is
what runs on the node).

A task whose worker dies (killed, out of memory, node lost) is sent once more: it resumes from the
run's last complete checkpoint. A second loss is a `RunLost` naming the run key, the node(s) and the
errors. The temporary files a dead worker left in the run's folder are removed; complete epochs stay.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer import settings
from trainer.cache import store
from trainer.cache.keys import content_key
from trainer.cache.record import Run
from trainer.errors import ConfigError, SuiteError
from trainer.experiment import Experiment, Full
from trainer.runs.cluster_task import AttemptLog, CacheNotShared, ClusterMismatch, train_task
from trainer.runs.keys import experiment_key, key_components
from trainer.runs.obtain import read_run_record
from trainer.runs.ranks import RankFailed

__all__ = ["CacheNotShared", "ClusterMismatch", "RunLost", "obtain_all", "shutdown"]

ATTEMPTS = 2  # a run is sent at most twice: once, and once more if its worker dies
PROCESS_BYTES = 1 << 30  # Python, torch and the libraries of one process, beyond the planned training step
READ_BACK_SECONDS = 30.0  # how long a finished run's record may take to show here (NFS caches a missing name)
# Ray's errors for a task whose worker, raylet or node went away (the task itself raised nothing).
LOSSES = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ObjectLostError")


class RunLost(SuiteError):
    """A run's Ray task died twice (worker killed, out of memory, node lost)."""


@dataclass(frozen=True)
class Needs:
    """What one run asks Ray for: CPUs, GPUs and bytes of host memory, all on one node."""

    cpus: int
    gpus: int
    memory: int

    def options(self) -> dict[str, Any]:
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "memory": self.memory}

    def words(self) -> str:
        gpus = f", {self.gpus} GPU(s)" if self.gpus else ""
        return f"{self.cpus} CPU(s){gpus}, {self.memory / 1e9:.1f} GB host memory"


@dataclass
class Sent:
    """One run in flight: the placed experiment, its key, what it asked for, and its attempts so far."""

    experiment: Experiment
    needs: Needs
    components: dict[str, Any]  # the key's parts as this process computes them (a node must compute the same)
    ref: Any = None
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def key(self) -> str:
        return content_key(self.components)

    @property
    def attempt(self) -> int:
        return len(self.failures) + 1


_connection: dict[str, Any] = {}  # the Ray session joined, the attempt log and task; "owned" if started here
_markers: dict[Path, Path] = {}  # cache folder -> the marker a node must see there
_connecting = threading.Lock()
_planning = threading.Lock()
sent_batches: collections.deque[list[str]] = collections.deque(maxlen=1000)  # run keys sent together, per call


def obtain_all(experiments: list[Experiment], progress: bool = True) -> list[Run]:
    """Each experiment's run, in order; those the shared cache lacks are trained as Ray tasks, together."""
    address = settings.active().cluster_address()
    nodes = connect(address)
    placed_runs = [place_on_cluster(exp, nodes, address) for exp in experiments]
    runs = {exp: cached_run(exp) for exp in dict.fromkeys(placed_runs)}
    missing = [exp for exp, run in runs.items() if run is None]
    if missing:
        share = cpu_share(len(missing), nodes)
        in_flight = [send(exp, nodes, share) for exp in missing]
        sent_batches.append([sent.key for sent in in_flight])
        runs |= collect(in_flight, progress)
    return [runs[exp] for exp in placed_runs]


def cached_run(exp: Experiment) -> Run | None:
    """The cached run of a placed experiment, read without placing it on this machine (which may lack its
    device); None when the cache does not answer it."""
    folder = store.run_dir(experiment_key(exp))
    record = read_run_record(folder)
    return Run(record, exp.epochs, from_cache=True, path=str(folder)) if record and record.answers(exp.epochs) \
        else None


# --- joining the cluster -----------------------------------------------------------------------------------

def connect(address: str) -> list[dict]:
    """Join the Ray cluster at `address` once per process ("local": start one here; "auto": the one running
    on this machine, else start one); returns its live nodes' resources."""
    ray = _ray(address)
    with _connecting:
        if not ray.is_initialized():  # one the caller started (as tests do: ray.init(num_cpus=2)) is used as is
            _init(ray, address)
            _connection["owned"] = True
        context = ray.get_runtime_context()
        session = (context.get_session_name(), context.get_job_id())
        if _connection.get("session") != session:  # first use, or Ray was restarted under this module
            _connection.update(session=session, attempts=_start_attempt_log(ray), task=ray.remote(train_task))
            _markers.clear()
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if not nodes:
        raise SuiteError(f"the Ray cluster at {address!r} has no live node; start one with `ray start`")
    return nodes


def _ray(address: str) -> Any:
    """The ray module, or an error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{settings.active().cluster_option()}={address!r}", [
            "Ray is not installed here: pip install 'ray>=2.40,<3' (or the project's extra: pip install -e "
            "'.[cluster]'), the same version on every node; or pass --ft-ray-address '' to train on this "
            "machine"]) from None
    return ray


def _init(ray: Any, address: str) -> None:
    """ray.init for each kind of address; an address that cannot be joined is an error saying what to do."""
    quiet = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    try:
        if address == "auto":
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:  # no cluster running on this machine: start one
                ray.init(address="local", num_cpus=settings.cores(), **quiet)
        elif address == "local":
            ray.init(address="local", num_cpus=settings.cores(), **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise SuiteError(f"{settings.active().cluster_option()}={address!r}: cannot join that Ray cluster "
                         f"({type(error).__name__}: {error}). Start it with `ray start --head` on its head node "
                         "and give the address it prints (host:6379, or ray://host:10001); a cluster with token "
                         "authentication (Ray's default) also needs RAY_AUTH_MODE=token here and its token "
                         "(~/.ray/auth_token or $RAY_AUTH_TOKEN). Or use 'local' to start one here") from error


def _start_attempt_log(ray: Any) -> Any:
    """The attempt log, pinned to this process's node: it must outlive any node a task dies with."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(AttemptLog).remote()


def _marker() -> Path:
    """A file in the cache, written here, that every node must see before it trains (made once per cache)."""
    root = settings.active().cache_root().absolute()
    if root not in _markers:
        marker = root / "cluster" / f"{uuid.uuid4().hex}.json"
        store.write_text_atomic(marker, json.dumps({"written_by_pid": os.getpid(), "session": _connection["session"]}))
        _markers[root] = marker
    return _markers[root]


def shutdown() -> None:
    """Leave the cluster if this module joined it (a local instance started here stops with it)."""
    for marker in _markers.values():
        marker.unlink(missing_ok=True)
    _markers.clear()
    owned = _connection.pop("owned", False)
    _connection.clear()
    if owned:
        import ray

        ray.shutdown()


atexit.register(shutdown)  # the CLI and library callers leave no marker behind either


# --- where a run trains and what it asks for ---------------------------------------------------------------

def place_on_cluster(exp: Experiment, nodes: list[dict], address: str) -> Experiment:
    """`exp` with a device kind and process count the cluster can give it: "auto" means CUDA when a node has
    GPUs, else the CPU. Checked against the nodes, not against this machine (which may have no GPU)."""
    active = settings.active()
    requested = exp.device if exp.device != "auto" else active.device_kind()
    kinds = (["cuda"] if any(node.get("GPU", 0) >= 1 for node in nodes) else []) + ["cpu"]
    kind = kinds[0] if requested == "auto" else requested
    processes = exp.processes if exp.processes is not None else active.process_count()
    subject = f"Experiment(model={exp.model!r}, device={requested!r}, processes={processes!r})"
    if kind not in kinds:
        raise ConfigError(subject, [f"no node of the Ray cluster at {address!r} has a {kind} device (they offer "
                                    f"{', '.join(kinds)}); use device='auto' or 'cpu', or add such a node"])
    slots = max(int(node.get("GPU" if kind == "cuda" else "CPU", 0)) for node in nodes)
    problems = []
    if processes > slots:
        unit = "GPUs" if kind == "cuda" else "CPUs"
        problems.append(f"processes={processes} > {slots} {unit} on the largest node: a run's processes share "
                        f"one node; use processes <= {slots}")
    if processes > exp.batch_size:
        problems.append(f"processes={processes} > batch_size={exp.batch_size}: every process needs at least one "
                        f"example per step; use processes <= {exp.batch_size} or a larger batch")
    if problems:
        raise ConfigError(subject, problems)
    return dataclasses.replace(exp, device=kind, processes=processes)


def cpu_share(runs: int, nodes: list[dict]) -> int:
    """CPUs for each of `runs` one-process CPU runs sent together: the cluster's CPUs split between them, as the
    local path splits the cores between its workers (a lone run gets a whole node), at least one."""
    total = sum(int(node.get("CPU", 0)) for node in nodes)
    return max(1, min(total // max(1, runs), max(int(node.get("CPU", 0)) for node in nodes)))


def needs_of(exp: Experiment, cpus: int = 1) -> Needs:
    """A one-process CPU run takes `cpus` (its threads); otherwise one CPU per process and, on CUDA, one GPU per
    process. Host memory from the planner: the whole training step on a CPU, what an offload moves to the
    host otherwise, plus the weights as loaded and the process."""
    per_process = _host_bytes(exp)
    alone_on_cpu = exp.device == "cpu" and exp.processes == 1
    return Needs(cpus=cpus if alone_on_cpu else exp.processes, gpus=exp.processes if exp.device == "cuda" else 0,
                 memory=exp.processes * (per_process + PROCESS_BYTES))


def _host_bytes(exp: Experiment) -> int:
    """The planner's host bytes for one process of `exp`. Where it plans no exact figure (chosen layers only,
    offload on a CPU), full fine-tuning with everything on the host bounds it from above."""
    from trainer.memory.planner import plan

    device = "cuda" if exp.device == "cuda" else "cpu"
    with _planning:  # the planner's trace hooks modules process-wide: one trace at a time
        try:
            step = plan(exp, batch=exp.batch_size, device=device)
        except ConfigError:
            device = "cpu"
            step = plan(dataclasses.replace(exp, method=Full(), offload=None), batch=exp.batch_size, device=device)
    return step.host_total + (step.device_total if device == "cpu" else 4 * step.parameters)


def _check_feasible(exp: Experiment, needs: Needs, nodes: list[dict]) -> None:
    """A request no node can hold would wait forever in Ray's queue: refuse it here instead."""
    def holds(node: dict) -> bool:
        return (node.get("CPU", 0) >= needs.cpus and node.get("GPU", 0) >= needs.gpus
                and node.get("memory", 0) >= needs.memory)

    if not any(holds(node) for node in nodes):
        largest = max(nodes, key=lambda node: node.get("memory", 0))
        raise ConfigError(f"{exp.label} on the Ray cluster", [
            f"it needs {needs.words()} on one node (the planner's estimate), and no node offers that (the largest "
            f"offers {largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs, "
            f"{largest.get('memory', 0) / 1e9:.1f} GB); add a larger node, or train it on this machine"])


# --- sending, waiting, retrying ----------------------------------------------------------------------------

def send(exp: Experiment, nodes: list[dict], cpus: int = 1) -> Sent:
    """Send one placed run as a Ray task (its resources checked against the nodes first)."""
    needs = needs_of(exp, cpus)
    _check_feasible(exp, needs, nodes)
    sent = Sent(exp, needs, key_components(exp))
    _submit(sent)
    return sent


def _submit(sent: Sent) -> None:
    """Send (or send again) one run's task, with this process's settings (folders absolute) and its marker."""
    task = _connection["task"].options(max_retries=0, name=f"train {sent.experiment.label}", **sent.needs.options())
    given = settings.active().resolved().replace(ray_address="")  # the task trains where it runs
    sent.ref = task.remote(sent.experiment, sent.components, given, str(_marker()), _connection["attempts"],
                           sent.attempt)


def collect(in_flight: list[Sent], progress: bool) -> dict[Experiment, Run]:
    """Wait for every run, sending once more a run whose worker died; read each record from the shared cache."""
    import ray

    pending = {sent.ref: sent for sent in in_flight}
    runs: dict[Experiment, Run] = {}
    started = time.perf_counter()
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        sent = pending.pop(ready)
        report = _outcome(sent, ready, progress)
        if report is None:  # lost, and sent again
            pending[sent.ref] = sent
            continue
        runs[sent.experiment] = _read_trained(sent, report)
        if progress:
            done = "trained" if report["trained"] else "found in the cache (another session trained it) by a task"
            print(f"[finetune] {sent.experiment.label}: {done} on {report['node']['host']} (epochs "
                  f"{report['node']['from_epoch']}->{sent.experiment.epochs}, {report['seconds']:.0f} s; "
                  f"{len(runs)}/{len(in_flight)} runs done, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return runs


def _outcome(sent: Sent, ready: Any, progress: bool) -> dict | None:
    """The task's report; None when its worker died and the run went out again. A second loss is a RunLost;
    the run's own error is raised as it was raised on the node."""
    import ray

    try:
        return ray.get(ready)
    except ray.exceptions.RayError as error:
        if not is_loss(error):
            raise _not_a_loss(error, sent) from None
        _clean_after_loss(sent)
        sent.failures.append(_loss_words(sent, error))
        if sent.attempt > ATTEMPTS:
            raise RunLost(_lost_message(sent)) from error
        if progress:
            print(f"[finetune] {sent.experiment.label}: {sent.failures[-1]}; sending it once more (it resumes "
                  "from its last complete checkpoint)", file=sys.stderr)
        _submit(sent)
        return None


def is_loss(error: BaseException) -> bool:
    """Whether a task failed because its worker, raylet or node went away (or, in a several-process run, a rank
    was killed by a signal), rather than with an error of its own that a second attempt would repeat."""
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        return isinstance(cause, RankFailed) and cause.killed
    return any(base.__name__ in LOSSES for base in type(error).__mro__)


def _not_a_loss(error: BaseException, sent: Sent) -> BaseException:
    """The run's own error as the node raised it (with a note naming the run and the node's traceback), or,
    for a task Ray could not run (its environment, its resources), a SuiteError that says so."""
    import ray

    where = f"(raised in the Ray task training {sent.experiment.label}, run key {sent.key})"
    if isinstance(error, ray.exceptions.RayTaskError) and isinstance(getattr(error, "cause", None), BaseException):
        cause = error.cause
        remote = str(error).strip().splitlines()[:-1]  # Ray's text: the node's traceback, then the message
        cause.add_note("\n".join([where, *remote[-12:]]))
        return cause
    return SuiteError(f"Ray could not run the task training {sent.experiment.label} (run key {sent.key}): "
                      f"{type(error).__name__}: {error}")


def _read_trained(sent: Sent, report: dict) -> Run:
    """The record the node wrote, read here. It may take a moment to show over NFS (a name looked up while
    missing is cached as missing); still missing then means the nodes do not share this process's cache."""
    folder = store.run_dir(sent.key)
    deadline = time.monotonic() + READ_BACK_SECONDS
    while True:
        record = read_run_record(folder)
        if record is not None and record.answers(sent.experiment.epochs):
            return Run(record, sent.experiment.epochs, from_cache=not report["trained"], path=str(folder))
        if time.monotonic() > deadline:
            raise CacheNotShared(
                f"{sent.experiment.label} trained on {report['node']['host']} into {report['folder']}, but this "
                f"process finds no complete record in {folder} after {READ_BACK_SECONDS:.0f} s: the cache folder "
                f"({settings.active().cache_root()}) must be one filesystem every node sees at the same path (NFS, "
                f"CephFS, Lustre...); set {settings.CACHE_DIR_ENV} or --ft-cache-dir to such a folder")
        time.sleep(0.5)
        os.listdir(folder.parent)  # makes an NFS client look again


def _clean_after_loss(sent: Sent) -> None:
    """Remove what the dead worker left unfinished in the run's folder, unless a live task holds the run's lock
    (another session's): that one cleans it before it trains, and is not to be waited for."""
    folder = store.run_dir(sent.key)
    with store.locked_if_free(folder.with_suffix(".lock")) as free:
        if free:
            store.remove_unfinished(folder)


def _loss_words(sent: Sent, error: BaseException) -> str:
    """One line for one lost attempt: where it ran and how it died."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"attempt {sent.attempt} {_where(sent)} died: {type(error).__name__}: {first_line}"


def _where(sent: Sent) -> str:
    """Where the attempt in flight started, from the attempt log (which never fails a run)."""
    import ray

    try:
        mine = [a for a in attempts(sent.key) if a["attempt"] == sent.attempt]
    except ray.exceptions.RayError:
        return "(node unknown: the attempt log is lost)"
    if not mine:
        return "(before it started on any node)"
    node = mine[-1]
    return (f"on {node['host']} ({node['ip']}, node {node['node_id'][:12]}, pid {node['pid']}, from epoch "
            f"{node['from_epoch']})")


def _lost_message(sent: Sent) -> str:
    """Every attempt, what stays cached, what the run asked for, and where to look next."""
    folder = store.run_dir(sent.key)
    record = read_run_record(folder)
    kept = f"epochs 1..{record.epochs_done} stay cached" if record and record.epochs_done else "no epoch was complete"
    return (f"{sent.experiment.label} (run key {sent.key}) was lost {len(sent.failures)} times:\n  "
            + "\n  ".join(sent.failures)
            + f"\n{kept} in {folder}, and the next request resumes from them. It asked for {sent.needs.words()}; "
              "if the node ran out of memory, give it more or run fewer runs on it; the node's Ray logs are under "
              "/tmp/ray/session_latest/logs")


def attempts(key: str) -> list[dict]:
    """Where each attempt at the run `key` started (host, ip, node id, pid, the epoch it resumed from)."""
    import ray

    return ray.get(_connection["attempts"].of.remote(key), timeout=30)
