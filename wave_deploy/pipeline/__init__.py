"""The build pipeline: plan -> train -> export -> bench -> report for each device profile.

build.py     build(): the stages in order, through the stage cache, failing closed
results.py   what a build answers: a DeviceResult per profile and the outcome (what it is asked:
             wave_deploy.options.BuildOptions)
manifest.py  stage keys, manifest.json and reuse of finished stages
"""
