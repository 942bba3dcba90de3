"""Moved to ``slidebench.harness`` (``loop``: the clock loop; ``process``: one process per run;
``executors``: local and Dask executors, the results lock). The old names stay importable here."""
from .harness.executors import (EXECUTORS, check_existing, dask_client, find_reusable, results_lock,  # noqa: F401
                                reuse, run_experiment, run_micro_experiment)
from .harness.loop import (EVAL_BLOCK, EVAL_K, EvalPlan, EvalSchedule, Progress, StopRule, execute,  # noqa: F401
                           score)
from .harness.process import (RunBusy, RunError, launch, load_data, micro_child, run_one, start,  # noqa: F401
                              thread_env, wall_limit)
