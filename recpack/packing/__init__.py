"""The parts of :func:`recpack.pack`, one concept per module (the public entry point is :mod:`recpack.pack`):

- :mod:`.options`: :class:`PackOptions`, what to pack and how, checked up front.
- :mod:`.plan`: the global shuffle and the cut into shards (pure; no file is opened).
- :mod:`.workers`: reading, checking and encoding images in a process pool (or in-process).
- :mod:`.write`: shards (and the LMDB database) written from the workers' results, crash-safe.
- :mod:`.cluster`: the same shards written by Dask tasks on a cluster.
- :mod:`.outdir`: the output folder: what may be replaced, the resume state in ``.recpack-pack/``, and the
  errors for a folder that cannot be written (full disk, read-only).
- :mod:`.lock`: one pack at a time per output folder.
- :mod:`.report`: the skipped inputs and ``pack-report.tsv``.

Nothing here imports :mod:`recpack.pack`, so every module can be imported on its own.
"""
