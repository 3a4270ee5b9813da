"""Calibration: measure how long ViT shapes take on a machine (here, or on the device through a bundle's kit)
and fit the latency model the planner predicts with (``wave-deploy calibrate``).

    design.py          which (depth, width, batch) points are measured, and how long each is timed
    design_export.py   the design's models exported once per width at the deployed precision
    graphs.py          weightless graphs of every design model (weights written from fill rules when timed)
    bundle.py          a bundle's calibration.zip: the design at its model's geometry, for the on-device kit
    cost.py            a design's memory (checked before anything is allocated) and time estimate
    calibrate.py       measure the design here and fit; write the calibration file
    device_samples.py  read the samples a device's kit measured (calibrate --from-device)
    file.py            the calibration file's schema, reader and writer (planning.latency reads it)
"""
