"""Past one machine: a build's per-clip work (decode, checks, normalisation, fingerprint) on the
workers of a Dask cluster; reading the sources, dedup, decontamination, splits and the store
stay in the process that runs `sari-data build`, which takes results back in source order, so
the corpus is the one a single process builds.

    dask scheduler                                  # on one machine: prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nworkers 8 --nthreads 1    # on each machine
    sari-data build --recipe R --set audio.cluster=tcp://HOST:8786

The workers must see the sources' audio and the workspace at the same paths (a shared disk).
Why Dask's `distributed`: it is pip-installable with no service of its own to run, its client
is a `concurrent.futures.Executor` (the local process pool's interface, so the build has one code
path), and a local 2-worker cluster starts in a few seconds inside a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager


class ClusterError(Exception):
    """No cluster to run on (Dask not installed, no scheduler at the address); the message says what to do."""


@contextmanager
def dask_executor(address: str) -> Iterator[tuple[Executor, int]]:
    """An executor on the Dask scheduler at `address`, and how many tasks its workers run at once."""
    try:
        from distributed import Client
    except ImportError as err:
        raise ClusterError("audio.cluster needs Dask's distributed: pip install 'sari-toolkit[cluster]'") from err
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"audio.cluster: no Dask scheduler answers at {address!r} ({err}); start one "
                           f"(`dask scheduler`, then `dask worker ADDRESS` per machine) or drop audio.cluster") from err
    try:
        yield client.get_executor(pure=False), max(1, sum(client.nthreads().values()))
    finally:
        client.close()
