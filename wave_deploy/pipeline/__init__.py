"""The build pipeline: plan -> train -> export -> bench -> report for each device profile.

build.py     build(): the stages in order, through the stage cache, failing closed
options.py   what a build is asked (BuildOptions) and what it answers (DeviceResult, outcome)
manifest.py  stage keys, manifest.json and reuse of finished stages
"""
