"""Running independent tasks on dask.distributed with a progress bar: the scheduler shared
by sweeps (one task per chunk) and kernel stores (one task per block).

Each task writes its own result into a store and flags it done; this module only
schedules them, counts completions and stops cleanly on the first failure or Ctrl-C.
"""

from __future__ import annotations

import logging
import signal

__all__ = ["run_tasks"]


def run_tasks(fn, tasks, client, workers, progress, n_total, n_done, *, desc="sweep",
              unit="chunk", shared=None) -> int:
    """Run ``fn(task, **shared)`` for every task; return how many completed.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled to the workers).
    tasks : list
        One argument of ``fn`` per task.
    client : dask.distributed.Client or None
        Run on this cluster.  Without one, a local cluster of ``workers`` single-threaded
        processes is started for the run, or, with ``workers <= 1`` or a single task, the
        tasks run one after another in this process.
    workers : int
        Local worker processes when ``client`` is None.
    progress : bool
        Show a tqdm bar (stderr) counting tasks, starting at ``n_done`` of ``n_total``.
    desc, unit : str
        Label and unit of the bar.
    shared : dict, optional
        Keyword arguments common to every task; on a cluster they are scattered once to
        every worker rather than copied into each task.

    Raises
    ------
    Exception
        The first task's exception, re-raised here after the remaining tasks are cancelled.
    """
    from tqdm.auto import tqdm

    shared = dict(shared or {})
    bar = tqdm(total=n_total, initial=n_done, unit=unit, desc=desc, disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    bar.refresh()  # shown at once: starting a cluster takes seconds
    computed = 0
    try:
        if client is None and (workers <= 1 or len(tasks) <= 1):
            for t in tasks:
                fn(t, **shared)
                computed += 1
                bar.update()
            return computed
        own = cluster = None
        if client is None:
            from dask.distributed import Client, LocalCluster

            # One single-threaded process per core: the Numba kernels hold the GIL.  The
            # workers ignore SIGINT (inherited while they start): Ctrl-C reaches this
            # process, which cancels the work and closes the cluster in order, instead of
            # every worker printing its own traceback.
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.CRITICAL)
                own = client = Client(cluster)
            finally:
                signal.signal(signal.SIGINT, old)
        from dask.distributed import as_completed

        futures = []
        try:
            common = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
            futures = client.map(fn, tasks, pure=False, **common)
            for fut in as_completed(futures):
                fut.result()  # re-raises a worker's exception here
                computed += 1
                bar.update()
        except BaseException:
            bar.leave = False
            _quiet_distributed()
            client.cancel(futures)
            raise
        finally:
            if own is not None:
                own.close()
                cluster.close()
        return computed
    except BaseException:
        bar.leave = False  # an interrupted bar is erased, so the last line says why
        raise
    finally:
        bar.close()


def _quiet_distributed():
    """Closing a cluster after a cancelled run logs every closed connection; silence it."""
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
