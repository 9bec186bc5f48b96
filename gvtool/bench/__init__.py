"""`gvtool bench`: latency and throughput of a bundle's graphs on every backend, precision, batch and device.

    core.py            timing, statistics, results and reports, what the numbers were measured on (numpy only)
    cases.py           running the cases side by side, interleaved round by round (numpy only)
    report.py          merging reports of several machines into tables, ratios and plots (numpy; matplotlib lazily)
    command.py         the command: the runtime's backends as cases, plus the PyTorch baseline when asked for
    torch_baseline.py  the run's checkpoint in PyTorch eager (or torch.compile), imported only when that case runs

Everything but torch_baseline.py imports no torch, so a device without torch benchmarks its bundles.
"""
