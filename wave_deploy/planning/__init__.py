"""Plan: predict what each ViT size costs on a device and choose the one that fits its budgets.

selection.py         the search space and the budget-driven choice (exit 5 when nothing fits)
latency.py           analytic and calibrated latency models
memory.py            runtime and engine-build memory estimates
calibration_file.py  the calibration file's schema, reader and writer
calibration_design.py  the calibration design: which points, at which geometry, timed how
calibrate.py         measure the design on this machine and fit the latency model
calibration_cost.py  what a calibration will cost before it starts: memory (checked) and time (estimated)
design_export.py     the design's depth-1 models, all widths exported in one call, as deployment exports
design_graphs.py     the design's graphs without weights (blocks replicated per depth): what bundles ship
device_samples.py    samples measured on a device by the bundle's kit, fitted (calibrate --from-device)
plot.py              the frontier plot of ``plan --plot``
"""
