"""Reporting: everything between the run logs and the reader.

* ``catalogue``  - experiment names, titles, captions, the paper's claims (read by plots and report);
* ``summarize``  - run logs (results/raw) -> summaries (results/summary/*.csv); the only reader of raw logs;
* ``summaries``  - loading the summaries (``Summary``, reference, roofline);
* ``speedup``    - time to every accuracy level and SLIDE's speedup there (pure computation);
* ``verdict``    - the rules that judge each claim;
* ``plots`` (``figures_train``, ``figures_micro``, ``drawing``, ``style``) - figures, drawing only;
* ``report`` (``sections``, ``tables``) - results/REPORT.md from the summaries;
* ``micro`` / ``reference`` - micro-experiments (fig4, fig11, tab3) and the non-neural reference.

Harness modules are imported in ``_harness`` only.
"""
