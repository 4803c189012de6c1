"""Deterministic simulation of the PBFT core: n replicas in one process, virtual time.

Modules: :mod:`~consensus.sim.prng` (seeded xoshiro256**), :mod:`~consensus.sim.scheduler`
(virtual-time event queue), :mod:`~consensus.sim.network` (delay, loss, duplication,
reordering, partitions), :mod:`~consensus.sim.app` (in-memory Application),
:mod:`~consensus.sim.faults` (fault schedules), :mod:`~consensus.sim.byzantine`
(Byzantine behaviours), :mod:`~consensus.sim.checkers` (safety and liveness) and
:mod:`~consensus.sim.runner` (``run_seed``/``run_many``). Nothing here reads a clock,
draws OS randomness or does I/O: a seed fixes a run.
"""
