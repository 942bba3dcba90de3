"""The harness: experiment files (``spec``), checks before anything trains (``checks``), the clock loop of
one run (``loop``), one process per run (``process``), executors and the results lock (``executors``),
run logs (``runlog``) and the environment manifest (``manifest``). docs/harness.md describes it."""
