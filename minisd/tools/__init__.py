"""Tools around the training loop: everything a run needs that is not the method itself.

* :mod:`minisd.tools.checkpoint`: checkpoint files, written atomically, read safely;
* :mod:`minisd.tools.flags`: the run's settings (Config), its flags and their checks;
* :mod:`minisd.tools.run_data`: the run's data set, validation split and normaliser;
* :mod:`minisd.tools.runs`: the run folder (config, metrics, summary);
* :mod:`minisd.tools.recipes`: the papers' training settings, each value cited;
* :mod:`minisd.tools.claim`: one process at a time in a folder (run, sweep, data download);
* :mod:`minisd.tools.sweep`: grids of runs (``python -m minisd.sweep``), started by
  :mod:`minisd.tools.launch`, drawn by :mod:`minisd.tools.fig8`;
* :mod:`minisd.tools.plot`: figures from run folders (``python -m minisd.plot``).

Nothing in the readable core (functional, layers, blocks, model, step, optim) imports this.
"""
