"""Train runs as Ray tasks, on a cluster whose nodes all see the cache, or on a local Ray instance.

With an address (--ft-ray-address / $RAY_ADDRESS), the uncached runs of one look go out together as
Ray tasks. Each asks for what it needs: one GPU per process where it trains on CUDA (one CPU per
process otherwise), and the host memory the planner estimates, so Ray never places more runs on a
node than fit. The node that trains writes the record and checkpoints into the shared cache (under
the run's lock, so two sessions train an experiment once); this process reads them from there.

A task whose worker dies (killed, out of memory, node lost) is sent once more: it resumes from the
run's last complete checkpoint. A second loss is a `RunLost` naming the run key, the node(s) and the
errors. Any temporary file a dead worker left is removed; complete epochs stay cached.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from trainer import settings
from trainer.cache import store
from trainer.cache.keys import content_key
from trainer.cache.record import Run
from trainer.errors import ConfigError, SuiteError
from trainer.experiment import Experiment, Full
from trainer.runs.keys import experiment_key, key_components
from trainer.runs.obtain import obtain, read_run_record

ATTEMPTS = 2  # a run is sent at most twice: once, and once more if its worker dies
PROCESS_BYTES = 1 << 30  # Python, torch and the libraries of one process, beyond the planned training step
LOCAL = ("local", "auto")  # addresses that may start a Ray instance on this machine


class RunLost(SuiteError):
    """A run's Ray task died twice (worker killed, out of memory, node lost)."""


class ClusterMismatch(SuiteError):
    """A node computes another key for a run: it runs other code, libraries or model files than this process."""


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
    key: str
    needs: Needs
    components: dict  # the key's parts as this process computes them (a node must compute the same)
    ref: Any = None
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def attempt(self) -> int:
        return len(self.failures) + 1


_connection: dict[str, Any] = {}  # this process's Ray job, its attempt log actor and task; "owned" if started here
_planning = threading.Lock()
sent_batches: list[list[str]] = []  # the run keys sent together by each call, in order (not counting resends)


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


def connect(address: str) -> list[dict]:
    """Join the Ray cluster at `address` once per process ("local": start one here; "auto": the one running
    on this machine, else start one); returns its live nodes' resources."""
    ray = _ray(address)
    if not ray.is_initialized():  # (one that the caller started, as tests do with ray.init(num_cpus=2), is used)
        _init(ray, address)
        _connection["owned"] = True
    job = ray.get_runtime_context().get_job_id()
    if _connection.get("job") != job:  # first use, or Ray was restarted under this module
        _connection.update(job=job, attempts=ray.remote(num_cpus=0)(AttemptLog).remote(),
                           task=ray.remote(train_task))
    nodes = [node["Resources"] | {"NodeManagerAddress": node["NodeManagerAddress"]}
             for node in ray.nodes() if node["Alive"]]
    if not nodes:
        raise SuiteError(f"the Ray cluster at {address!r} has no live node; start one with `ray start`")
    return nodes


def _ray(address: str):
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{settings.active().cluster_option()}={address!r}", [
            "Ray is not installed here: pip install 'ray>=2.40,<3' (or the project's extra: pip install -e "
            "'.[cluster]'), the same version on every node; or unset it to train on this machine"]) from None
    return ray


def _init(ray, address: str) -> None:
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
                         "and give its address (host:6379, or ray://host:10001), or use 'local' to start one "
                         "here") from error


def shutdown() -> None:
    """Leave the cluster if this module joined it (a local instance started here stops with it)."""
    owned = _connection.pop("owned", False)
    _connection.clear()
    if owned:
        import ray

        ray.shutdown()


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
    components = key_components(exp)
    sent = Sent(exp, content_key(components), needs, components)
    _submit(sent)
    return sent


def _submit(sent: Sent) -> None:
    task = _connection["task"].options(max_retries=0, name=f"train {sent.experiment.label}", **sent.needs.options())
    given = settings.active().resolved().replace(ray_address="")  # the task trains where it runs
    sent.ref = task.remote(sent.experiment, sent.components, given, _connection["attempts"], sent.attempt)


def collect(in_flight: list[Sent], progress: bool) -> dict[Experiment, Run]:
    """Wait for every run; a run whose worker died goes out once more; read each record from the shared cache."""
    import ray
    from ray.exceptions import RayTaskError, TaskCancelledError

    pending = {sent.ref: sent for sent in in_flight}
    runs: dict[Experiment, Run] = {}
    started = time.perf_counter()
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        sent = pending.pop(ready)
        try:
            report = ray.get(ready)
        except RayTaskError as error:  # the run's own error (bad configuration, a failing rank): as raised there
            raise _as_raised_there(error, sent) from None
        except (ray.exceptions.RayError, TaskCancelledError) as error:  # the worker or its node is gone
            _clean_after_loss(sent)
            sent.failures.append(_loss_words(sent, error))
            if sent.attempt > ATTEMPTS:
                raise RunLost(_lost_message(sent)) from error
            if progress:
                print(f"[finetune] {sent.experiment.label}: {sent.failures[-1]}; sending it once more (it resumes "
                      "from its last complete checkpoint)", file=sys.stderr)
            _submit(sent)
            pending[sent.ref] = sent
            continue
        runs[sent.experiment] = _read_trained(sent, report)
        if progress:
            done = "trained" if report["trained"] else "found in the cache (another session trained it) by a task"
            print(f"[finetune] {sent.experiment.label}: {done} on {report['node']['host']} (epochs "
                  f"{report['from_epoch']}->{sent.experiment.epochs}, {report['seconds']:.0f} s; "
                  f"{len(runs)}/{len(in_flight)} runs done, {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return runs


def _as_raised_there(error, sent: Sent) -> BaseException:
    cause = error.cause if isinstance(getattr(error, "cause", None), BaseException) else error
    cause.add_note(f"(raised in the Ray task training {sent.experiment.label}, run key {sent.key})")
    return cause


def _read_trained(sent: Sent, report: dict) -> Run:
    """The record the node wrote, read here; missing means the nodes do not share this process's cache."""
    folder = store.run_dir(sent.key)
    record = read_run_record(folder)
    if record is None or not record.answers(sent.experiment.epochs):
        raise SuiteError(
            f"{sent.experiment.label} trained on {report['node']['host']} into {report['folder']}, but this process "
            f"finds no complete record in {folder}: the cache folder ({settings.active().cache_root()}) must be one "
            f"filesystem every node sees at the same path (NFS, CephFS, Lustre...); set {settings.CACHE_DIR_ENV} "
            "or --ft-cache-dir to such a folder")
    return Run(record, sent.experiment.epochs, from_cache=not report["trained"], path=str(folder))


def _clean_after_loss(sent: Sent) -> None:
    """Nothing half-written stays: remove what the dead worker left unfinished (under the run's lock)."""
    folder = store.run_dir(sent.key)
    with store.locked(folder.with_suffix(".lock")):
        store.remove_unfinished(folder)


def _loss_words(sent: Sent, error: BaseException) -> str:
    where = _where(sent)
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"attempt {sent.attempt} {where} died: {type(error).__name__}: {first_line}"


def _where(sent: Sent) -> str:
    import ray

    attempts = ray.get(_connection["attempts"].of.remote(sent.key))
    mine = [a for a in attempts if a["attempt"] == sent.attempt]
    if not mine:
        return "(before it started on any node)"
    node = mine[-1]
    return f"on {node['host']} ({node['ip']}, node {node['node_id'][:12]}, pid {node['pid']}, from epoch " \
           f"{node['from_epoch']})"


def _lost_message(sent: Sent) -> str:
    folder = store.run_dir(sent.key)
    record = read_run_record(folder)
    kept = f"epochs 1..{record.epochs_done} stay cached" if record and record.epochs_done else "no epoch was complete"
    return (f"{sent.experiment.label} (run key {sent.key}) was lost {len(sent.failures)} times:\n  "
            + "\n  ".join(sent.failures)
            + f"\n{kept} in {folder}, and the next request resumes from them. It asked for {sent.needs.words()}; "
              "if the node ran out of memory, give it more or run fewer runs on it; the node's Ray logs are under "
              "/tmp/ray/session_latest/logs")


def attempts(key: str) -> list[dict]:
    """Where each attempt at the run `key` started (host, ip, node id, pid, epoch it resumed from)."""
    import ray

    return ray.get(_connection["attempts"].of.remote(key))


# --- on the node -------------------------------------------------------------------------------------------

class AttemptLog:
    """A Ray actor: each task says where it starts before it trains, so a task that dies can still be named."""

    def __init__(self) -> None:
        self.started: dict[str, list[dict]] = {}

    def start(self, key: str, entry: dict) -> None:
        self.started.setdefault(key, []).append(entry)

    def of(self, key: str) -> list[dict]:
        return self.started.get(key, [])


def train_task(exp: Experiment, components: dict, given: settings.Settings, log, attempt: int) -> dict:
    """On a node: check the key, say where this attempt starts, train (resuming what is cached), report."""
    import ray
    import torch

    settings.use(given)
    if exp.processes == 1:
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    mine = key_components(exp)
    if mine != components:
        raise ClusterMismatch(_mismatch(exp, components, mine))
    key = content_key(components)
    folder = store.run_dir(key)
    record = read_run_record(folder) if folder.is_dir() else None
    node = {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    from_epoch = record.epochs_done if record else 0
    ray.get(log.start.remote(key, node | {"attempt": attempt, "from_epoch": from_epoch}))
    started = time.perf_counter()
    run = obtain(exp, progress=False)  # under the run's lock: another session's task may have trained it meanwhile
    return {"node": node, "from_epoch": from_epoch, "folder": str(folder), "trained": not run.from_cache,
            "seconds": time.perf_counter() - started}


def _mismatch(exp: Experiment, theirs: dict, mine: dict) -> str:
    differing = [f"{name}: pytest process {theirs.get(name)!r}, this node {mine.get(name)!r}"
                 for name in sorted(set(theirs) | set(mine)) if theirs.get(name) != mine.get(name)]
    return (f"{exp.label}: this node ({socket.gethostname()}) computes another run key than the pytest process, "
            f"so it would train into another cache entry. Every node must run the same code, libraries and model "
            f"files; they differ in:\n  " + "\n  ".join(differing)
            + "\nInstall the same commit and environment on every node (and share the model folders)")
