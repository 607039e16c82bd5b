"""``RayResource``: connect Dagster runs to Ray, or start an embedded local Ray."""

from typing import Any

import dagster as dg
import ray
from pydantic import PrivateAttr

__all__ = ["RayResource"]


class RayResource(dg.ConfigurableResource):
    """Ray for the run.

    ``address=None`` joins a running local cluster (``RAY_ADDRESS``, or one started with
    ``ray start --head``) or else starts an embedded one; ``"auto"`` or
    ``"ray://host:port"`` attaches to an existing cluster. If Ray is already initialised
    in the process it is used as it is. Only a connection this resource opened is closed
    at the end of the run, which stops a cluster only if this resource started it.

    Examples
    --------
    >>> RayResource(num_cpus=4, runtime_env={"env_vars": {"POLARS_MAX_THREADS": "2"}})
    ... # doctest: +SKIP
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    runtime_env: dict[str, Any] | None = None
    include_dashboard: bool | None = None
    namespace: str | None = None

    _owned: bool = PrivateAttr(default=False)
    _started: bool = PrivateAttr(default=False)
    _dashboard_url: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if ray.is_initialized():
            self._owned = False
            return
        options = {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "runtime_env": self.runtime_env,
            "include_dashboard": self.include_dashboard,
            "namespace": self.namespace,
        }
        info = self._connect(context, {k: v for k, v in options.items() if v is not None})
        self._owned = True
        self._started = _started_here()
        self._dashboard_url = getattr(info, "dashboard_url", None) or None

    def _connect(self, context: dg.InitResourceContext, options: dict[str, Any]) -> Any:
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
            context.log.warning(
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
