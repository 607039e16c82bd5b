"""``RayResource``: connect Dagster runs to Ray, or start an embedded local Ray, on first
use; and :func:`connected`, which does the same for dagster-ray's resources."""

import contextlib
import socket
from typing import Any, Protocol
from urllib.parse import urlsplit

import dagster as dg
import ray
from pydantic import Field, PrivateAttr

__all__ = ["RayConnection", "RayResource", "connected"]


class RayResource(dg.ConfigurableResource):
    """Ray for the run, connected lazily: on the first use by a step that runs Ray tasks
    (an IO manager's fan-out), not when Dagster initialises the resource. A step that runs
    no task, such as the partition checks (Dagster initialises the upstream asset's IO
    manager, and so this resource, in every step that reads the asset, even as a
    ``Nothing`` input), never starts Ray.

    ``address=None`` joins a running local cluster (``RAY_ADDRESS``, or one started with
    ``ray start --head``) or else starts an embedded one; ``"auto"`` or
    ``"ray://host:port"`` attaches to an existing cluster, which must answer within
    ``connect_timeout_s``. If Ray is already initialised in the process it is used as it
    is. Only a connection this resource opened is closed at the end of the step, which
    stops a cluster only if this resource started it.

    Examples
    --------
    >>> RayResource(num_cpus=4, runtime_env={"env_vars": {"POLARS_MAX_THREADS": "2"}})
    ... # doctest: +SKIP
    """

    address: str | None = Field(
        default=None,
        description="The Ray cluster: 'ray://host:10001' (Ray Client), 'host:6379' or "
        "'auto' (a cluster this machine is part of); unset, a running local cluster "
        "(RAY_ADDRESS) or else an embedded Ray started for the step.",
    )
    num_cpus: int | None = Field(
        default=None, description="CPUs of an embedded Ray (default: all of the machine's)."
    )
    num_gpus: int | None = Field(default=None, description="GPUs of an embedded Ray.")
    runtime_env: dict[str, Any] | None = Field(
        default=None,
        description="Ray's runtime_env of the run's tasks, such as "
        "{'env_vars': {'POLARS_MAX_THREADS': '2'}} or pip packages.",
    )
    include_dashboard: bool | None = Field(
        default=None, description="Whether an embedded Ray starts its dashboard."
    )
    namespace: str | None = Field(default=None, description="The Ray namespace of the run.")
    connect_timeout_s: float = Field(
        default=10.0,
        description="How long an address's host may take to answer before the run fails "
        "naming it (a wrong address fails fast instead of waiting on Ray's retries).",
    )

    _owned: bool = PrivateAttr(default=False)
    _started: bool = PrivateAttr(default=False)
    _dashboard_url: str | None = PrivateAttr(default=None)

    def connect(self, log: Any = None) -> None:
        """Connect to (or start) Ray, once: what a step does before its first Ray task."""
        if ray.is_initialized():
            return
        _answers(self.address, self.connect_timeout_s)
        options = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "runtime_env": self.runtime_env,
            "include_dashboard": self.include_dashboard,
            "namespace": self.namespace,
        }
        info = self._init(log, {k: v for k, v in options.items() if v is not None})
        self._owned = True
        self._started = _started_here()
        self._dashboard_url = getattr(info, "dashboard_url", None) or None

    def _init(self, log: Any, options: dict[str, Any]) -> Any:
        # Ray Client's proxy forks a server for each connection, and that fork dies now and
        # then (ray-project/ray#63202, a few percent of connects under load); the next
        # connection gets a new fork. A connect that fails anywhere but in the proxy's start
        # of that server is raised at once.
        attempt = 1
        while True:
            try:
                return ray.init(address=self.address, log_to_driver=False, **options)
            except ConnectionAbortedError as error:
                died = any(sign in str(error) for sign in _CLIENT_SERVER_DIED)
                if not died or attempt == _CLIENT_CONNECT_ATTEMPTS:
                    raise
            if log is not None:
                log.warning(
                    f"Ray Client's server for this run did not start (attempt {attempt} of "
                    f"{_CLIENT_CONNECT_ATTEMPTS}, ray-project/ray#63202): connecting again"
                )
            attempt += 1

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._owned and ray.is_initialized():
            ray.shutdown()
        self._owned = self._started = False

    @property
    def cluster_address(self) -> str | None:
        """The cluster's GCS address, where Ray is running."""
        if not ray.is_initialized():
            return None
        return ray.get_runtime_context().gcs_address

    @property
    def dashboard_url(self) -> str | None:
        """The dashboard's URL, where this resource connected and the cluster has one."""
        return self._dashboard_url

    @property
    def started_cluster(self) -> bool:
        """Whether this resource started the cluster itself, which ends with the run."""
        return self._started


class RayConnection(Protocol):
    """What the IO managers need of their ``ray`` resource, met by :class:`RayResource`
    and, through :func:`connected`, by dagster-ray's resources."""

    @property
    def cluster_address(self) -> str | None: ...

    @property
    def dashboard_url(self) -> str | None: ...

    @property
    def started_cluster(self) -> bool: ...


class _DagsterRay:
    """A dagster-ray resource (``LocalRay``, ``KubeRayCluster``, ``KubeRayInteractiveJob``:
    anything with its ``connected``, ``connect(context)`` and ``dashboard_url``) seen as a
    :class:`RayConnection`."""

    def __init__(self, resource: Any) -> None:
        self.resource = resource

    @property
    def cluster_address(self) -> str | None:
        return ray.get_runtime_context().gcs_address if ray.is_initialized() else None

    @property
    def dashboard_url(self) -> str | None:
        with contextlib.suppress(Exception):
            return str(self.resource.dashboard_url)
        return None

    @property
    def started_cluster(self) -> bool:
        return _started_here()


def connected(resource: Any, context: Any) -> RayConnection:
    """``resource`` connected, on this first use if it is not yet: a :class:`RayResource`,
    or a dagster-ray resource, which connects as its ``lifecycle`` says (``connect: false``
    makes it lazy like ours: it connects here) and which a process where Ray is already
    initialised uses as it is."""
    if isinstance(resource, RayResource):
        resource.connect(getattr(context, "log", None))
        return resource
    if callable(getattr(resource, "connect", None)) and hasattr(resource, "connected"):
        if not resource.connected and not ray.is_initialized():
            resource.connect(context)
        return _DagsterRay(resource)
    raise TypeError(
        f"ray must be a piot_dagster RayResource or a dagster-ray resource (LocalRay, "
        f"KubeRayCluster, KubeRayInteractiveJob), not {type(resource).__name__}"
    )


def _answers(address: str | None, timeout: float) -> None:
    """Refuse, within ``timeout`` seconds, an address whose host does not accept a
    connection on its port: Ray itself retries such an address for minutes."""
    if not address or address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if host is None or port is None:
        return  # Ray's own defaults and errors apply
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise ConnectionError(
            f"Ray at {host}:{port} (address {address!r}) does not answer: {reason} within "
            f"{timeout:g} s. Check the ray address, or that the cluster is up"
        ) from None


_CLIENT_CONNECT_ATTEMPTS = 3
# How the proxy reports the fork's death: found dead after it started, or as it started
# (psutil's ZombieProcess raised inside start_specific_server).
_CLIENT_SERVER_DIED = ("Starting Ray client server failed", "start_specific_server")


def _started_here() -> bool:
    """Whether ``ray.init`` started a cluster in this process (it then hosts the head node)
    rather than joining one. Ray offers no public way to ask; a Ray Client connection has
    no node here and joined."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    return bool(getattr(node, "head", False))
