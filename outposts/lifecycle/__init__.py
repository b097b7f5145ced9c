"""The worker side of a server's life: ``start`` runs a start, ``end`` stops and ends servers,
``reconcile`` is the periodic round over an Outpost's servers. Only Celery tasks call them.

Ownership rules that make every task safe to run twice (acks_late redelivers a crashed
worker's task, and Redis redelivers a task still running past its visibility timeout): a
server in REQUESTED belongs to nobody yet; the start task claims it by moving it to PENDING
and taking its start lease, and from then on owns the spawner until it is RUNNING or ended.
While it runs it renews the lease and saves the spawner's state (its heartbeat), so another
copy of the task, or the reconciler, takes a PENDING server over only once the lease has
run out (the owner died) and can stop what the owner left from the saved state: a copy then
starts again, the reconciler ends the start as failed at its next round, whatever the start
timeout (it has none of the start's TLS material). The stop
task and the reconciler act on RUNNING, UNKNOWN and STOPPING servers. A stop asked for while
PENDING is carried out by the start task (it watches stop_requested_at). Every transition
re-reads the row under a lock and does nothing if someone else got there first.
"""
