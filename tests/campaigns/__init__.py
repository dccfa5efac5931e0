"""Test tooling that attacks or generates data, shared by the tests and the benchmark scripts.

- :mod:`campaigns.faults`: bit flips and truncation of a packed dataset, checked against every reader;
- :mod:`campaigns.crashes`: ``kill -9`` of ``recpack pack`` at random moments, then a re-run;
- :mod:`campaigns.soak`: a loader soak (break, raise, close, GC, resume) watching threads, fds and RSS;
- :mod:`campaigns.synthetic`: a fast writer of huge valid datasets of tiny non-image records;
- :mod:`campaigns.leaks`: what a run leaves behind (recpack threads, open file descriptors, RSS);
- :mod:`campaigns.report`: writing a campaign's table into docs/reliability.md.

Why here and not in the package: no user runs these; they damage data, kill processes or write records that
are not images, and they reach into recpack's internals (record layout, shard regions) the way an attacker
would. ``recpack.synth`` (realistic photo folders) is the generator users get.

The tests import them as ``campaigns.<name>`` (pytest puts tests/ on ``sys.path``; conftest.py makes sure);
the long runs are thin command lines in benchmarks/ (faults.py, crashes.py, scale.py) that put tests/ on
``sys.path`` and call the same functions. Tests never import anything from benchmarks/.
"""
