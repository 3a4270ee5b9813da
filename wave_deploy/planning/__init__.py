"""Plan: predict what each ViT size costs on a device and choose the one that fits its budgets.

selection.py         the search space and the budget-driven choice (exit 5 when nothing fits)
latency.py           analytic and calibrated latency models
memory.py            runtime and engine-build memory estimates
calibration_file.py  the calibration file's schema, reader and writer
calibrate.py         measure shapes on a machine (or read a device's samples) and fit the latency model
plot.py              the frontier plot of ``plan --plot``
"""
