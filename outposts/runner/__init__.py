"""The spawner runner: an ordinary JupyterHub spawner driven outside JupyterHub.

- ``spawner``: ``SpawnerRunner``, one server's spawner with the request applied;
- ``watch``: ``start_watched``, a start that gives up on a stop, a timeout or a takeover;
- ``checks``: names that must never reach a spawner; ``tls``: internal-SSL files;
- ``children``: the local-process servers this worker process started;
- ``standins``: what a spawner reads of JupyterHub (its user, Hub, database), stood in for.
- ``slurm``, ``kube``: what the runner adds to SlurmSpawner and KubeSpawner.

The runner never touches the database; the lifecycle (outposts/lifecycle/) persists what it
returns.

Process design (local-process spawners). LocalProcessSpawner starts the server with Popen
(in a new session, so worker signals do not reach it), which makes the server a child of the
worker process. Only that process can reap it and learn its exit status; any other process
polling the pid with ``os.kill(pid, 0)`` sees an exited-but-unreaped child (a zombie) as
alive. So:

- the worker runs ONE process with a thread pool (settings.CELERY_WORKER_POOL = "threads"):
  every start, poll and stop of an Outpost's servers runs in the process that owns them;
- the Popen handle of every server this process started is kept (``children``) and given
  back to the rebuilt spawner on each poll/stop, so ``Popen.poll()`` reaps the child and
  reports its real exit status (dropping the handle would let Popen's own clean-up reap it
  behind our back and lose the status);
- a server this process did not start (the worker restarted; someone runs prefork anyway) is
  judged by its pid, and a pid that is a zombie counts as exited: polls stay truthful even
  though the exit status is then unknown (reported as 0, as JupyterHub does).

Batch and Kubernetes spawners keep their servers elsewhere; none of this applies to them.
"""
